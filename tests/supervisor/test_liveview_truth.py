"""The live view tells the truth (issue 19): shard-wide progress, the ETA at the crawl's
pace while crawling, percentages that agree with their numbers, rows that fit 80
columns, timestamps in lines mode, and a drill shown as a drill. Render functions are
fed fixed facts; the view reads real files a fixed clock stamps."""

from __future__ import annotations

import io
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from crawlguard.kernel.formats import ladderfile
from crawlguard.kernel.formats.batchlog import BatchTail, BatchWriter
from crawlguard.kernel.formats.ladderfile import HistoryEntry, LadderFile
from crawlguard.kernel.statedir import StateDir
from crawlguard.rig.liveview import WIDTH, LiveView, ShardFacts, shard_facts, shard_row
from crawlguard.rig.shardview import read_ladder
from crawlguard.supervisor.loop import ShardRun, SupervisorEvent
from tests.helpers import Proc, clean_env, crawlguard_cmd

CLOCK = 1_800_000_000.0


def _write(state: StateDir, pid: int, total: int, rows: list[dict[str, Any]]) -> None:
    """One launch's batches: each row's genes, seconds, ema and streak; ``remaining``
    counted down from ``total`` as that worker's tracker does."""
    writer = BatchWriter(state.batches_file("a"), stage="backfill", device="cuda:0", gpu="0",
                         pid=pid, factor=5.0)
    left = float(total)
    for i, row in enumerate(rows):
        left -= row["genes"]
        writer.append(t=100.0 + i, genes=row["genes"], seconds=row["seconds"],
                      rate=row["genes"] / row["seconds"], ema=row.get("ema"),
                      baseline=row.get("baseline", 39.9), streak=row.get("streak", 0),
                      total=total, remaining=left)
    writer.close()


def _facts(state: StateDir, run: ShardRun) -> ShardFacts:
    tail = BatchTail(state.batches_file("a"))
    tail.poll()
    return shard_facts(run, tail, read_ladder(state, "a"))


def test_progress_covers_the_whole_shard_not_the_current_launch(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    # Launch 1 was told 600 genes and did 500; launch 2 is told the 100 left, does 44.
    _write(state, 1, 600, [{"genes": 50.0, "seconds": 50 / 39.9, "ema": 39.9}] * 10)
    _write(state, 2, 100, [{"genes": 44.0, "seconds": 44 / 39.9, "ema": 39.9}])
    facts = _facts(state, ShardRun("a", state="running", launches=2))
    assert (facts.done, facts.total) == (544.0, 600)
    row = shard_row(facts, 200)
    assert "544/600 genes  91%" in row          # not 44/100, not "65%" of anything
    # 56 genes left at the healthy 39.9 genes/s.
    assert facts.eta == pytest.approx(56 / 39.9) and "ETA 1 s" in row
    assert "CRAWLING" not in row and "at the crawl's pace" not in row


def test_while_crawling_the_eta_is_at_the_crawls_pace_and_says_so(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    _write(state, 1, 600, [{"genes": 50.0, "seconds": 50 / 39.9, "ema": 39.9}] * 4
           + [{"genes": 40.0, "seconds": 10.0, "ema": 4.0, "streak": 2}])
    facts = _facts(state, ShardRun("a", state="running", launches=1))
    assert facts.crawling
    healthy = 360 / 39.9
    assert facts.eta == pytest.approx(healthy * 39.9 / 4.0)   # 360 genes at 4 genes/s
    row = shard_row(facts, 200)
    # The number and its percentage are one pair: 4.0 / 39.9 = 10 %.
    assert "4.0 genes/s (10% of baseline)" in row
    assert "ETA 1.5 min at the crawl's pace" in row and "CRAWLING crawls 0" in row
    # A stopped shard forecasts nothing and is not crawling.
    stopped = _facts(state, ShardRun("a", state="stopped", launches=1))
    assert not stopped.crawling and stopped.eta is None


FACTS = ShardFacts(shard="slack__eng-oncall-and-more", state="running", device="cuda:0",
                   done=544, total=600, logged=568, pace=4.0, baseline=39.9, crawling=True,
                   eta=140.0, crawls=1, rungs=("restart",), drills=1, launches=2)


@pytest.mark.parametrize("width", [32, 40, 52, 69, 77, 79, 80, 120, 300])
def test_rows_fit_the_width_and_keep_the_crawl_and_rung_state(width: int) -> None:
    row = shard_row(FACTS, width)
    assert len(row) <= width, row
    assert "CRAWLING" in row and "restart" in row and ("c1" in row or "crawls 1" in row)
    assert row.startswith("sla")                 # the name is cut, never dropped
    if width >= 300:                              # everything, in its long form
        for part in ("544/600 genes  91%", "(+24 redone)", "4.0 genes/s (10% of baseline)",
                     "ETA 2.3 min at the crawl's pace", "crawls 1 rungs restart drills 1",
                     "launches 2", "cuda:0"):
            assert part in row, (part, row)
    if width == 77:                               # a terminal of 80 columns, less indent
        assert row.startswith("slack__eng-oncall~ ")
        assert "544/600 91%" in row and "crawl ETA 2.3 min" in row


def test_lines_mode_stamps_every_line_and_fits_80_columns(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    _write(state, 1, 600, [{"genes": 40.0, "seconds": 10.0, "ema": 4.0, "streak": 2}])
    out = io.StringIO()
    runs = {"a-shard-with-a-long-name": ShardRun("a-shard-with-a-long-name", state="running"),
            "a": ShardRun("a", state="running", launches=1)}
    view = LiveView(state, runs, out, mode="lines", period=3600, clock=lambda: CLOCK)
    view.tick(force=True)
    view.event(SupervisorEvent("a", "launch", "launch #2: pid 7"))
    stamp = time.strftime("%H:%M:%S", time.localtime(CLOCK))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{stamp} ") and len(line) <= WIDTH for line in lines), lines
    assert lines[2] == f"{stamp} crawlguard up: [a] launch #2: pid 7"
    assert "CRAWLING" in lines[1] and "40/600" in lines[1]


def test_a_terminal_block_fits_80_columns_on_a_wide_terminal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    state = StateDir(tmp_path)
    _write(state, 1, 600, [{"genes": 40.0, "seconds": 10.0, "ema": 4.0, "streak": 2}])
    tty = io.StringIO()
    view = LiveView(state, {"a": ShardRun("a", state="running", launches=1)}, tty, mode="tty")
    view.tick()
    rows = [line for line in tty.getvalue().split("\n") if line.strip()]
    assert rows and all(len(r.replace("\x1b[J", "")) < WIDTH for r in rows), rows
    assert "CRAWLING" in rows[-1]


def test_a_drills_restart_is_shown_as_a_drill_not_a_rung(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    out = io.StringIO()
    run = ShardRun("a", state="running", launches=1)
    view = LiveView(state, {"a": run}, out, mode="lines", period=3600, clock=lambda: CLOCK)
    state.ladder_file("a").parent.mkdir(parents=True, exist_ok=True)
    ladderfile.write(state.ladder_file("a"), LadderFile(shard="a", history=[
        HistoryEntry(kind="drill", at=1.0, alertname="BFMShardCrawl"),
        HistoryEntry(kind="rung", at=1.0, id="r1", rung="restart", source="drill",
                     reason="drill d1: BFMShardCrawl")]))
    view.tick(force=True)
    text = out.getvalue()
    assert "[a] sidecar: drill -> restart of the worker, no rung taken (drill d1" in text
    assert "-> rung" not in text and "crawl #" not in text
    ladder = read_ladder(state, "a")
    assert ladder.rung_names == [] and ladder.drills == 1
    facts = shard_facts(run, view.logs["a"], ladder)
    assert "crawls 0 rungs - drills 1" in shard_row(facts, 300)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a process")
def test_run_says_the_one_command_that_resumes_after_ctrl_c(tmp_path: Path) -> None:
    worker = [sys.executable, "-c", "import time; time.sleep(120)"]
    run = Proc(crawlguard_cmd("run", "--shard", "a", "--", *worker),
               env=clean_env(HELIX_BFM_STATE_DIR=str(tmp_path / "state")), cwd=tmp_path,
               inherit_env=False)
    try:
        run.wait_for_line(r"\[a\] launch #1", 30)
        os.kill(run.pid, signal.SIGINT)
        assert run.wait(60) == 130, run.output
    finally:
        run.stop()
    last = run.lines[-1]
    assert "To resume: " in last, run.output
    line = last.split("To resume: ", 1)[1].split(" (state dir ", 1)[0]
    assert shlex.split(line) == ["crawlguard", "run", "--shard", "a", "--", *worker]
    assert f"(state dir {tmp_path / 'state'}," in last
