"""What the report's charts and summary say (issue 19): the onset, the alert and a stalled
batch are marked, VRAM is drawn as steps, the legend has one entry per meaning, the time
axis is clock time, and redone work is labelled. Asserted on the matplotlib artists."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from crawlguard.kernel.formats.batchlog import Batch
from crawlguard.kernel.formats.ladderfile import HistoryEntry, LadderFile
from crawlguard.kernel.formats.vramlog import VramSample
from crawlguard.report.evidence import ShardEvidence, ladder_marker, load_run
from crawlguard.report.summary import summary_markdown

pytest.importorskip("matplotlib")

from matplotlib.dates import DateFormatter, date2num

from crawlguard.report import chart

T0 = 1_781_049_600.0  # 2026-06-10 00:00:00 UTC


def _batch(t: float, pid: int, device: str, rate: float, streak: int = 0,
           **kw: Any) -> Batch:
    base = 16.0 if device.startswith("cuda") else 4.0
    return Batch(t=t, stage="backfill", device=device, gpu="0" if device != "cpu" else "",
                 pid=pid, genes=64, seconds=64 / rate, rate=rate, ema=rate, baseline=base,
                 streak=streak, factor=5, **kw)


def _crawl_then_cpu() -> tuple[ShardEvidence, dict[str, float]]:
    """A GPU worker that slows down (streak from the 6th batch), an alert, a restart; a
    worker whose batch stalls, a CPU rung; a CPU worker."""
    b: list[Batch] = []
    t = T0
    for i in range(10):
        slow = i >= 5
        rate = 2.0 if slow else 16.0
        t += 64 / rate
        b.append(_batch(t, 1, "cuda:0", rate, streak=i - 4 if slow else 0))
    onset = b[5].t - b[5].seconds
    alert, restart = t - 10, t + 5
    t = restart + 10
    for _ in range(3):
        t += 4.0
        b.append(_batch(t, 2, "cuda:0", 16.0))
    stall_from, cpu = t, t + 300        # the next batch never finished
    t = cpu + 10
    for _ in range(5):
        t += 16.0
        b.append(_batch(t, 3, "cpu", 4.0))
    ladder = LadderFile(shard="s", crawls=2, rung="cpu", history=[
        HistoryEntry(kind="crawl", at=alert + 2, starts_at=alert, alertname="BFMShardCrawl"),
        HistoryEntry(kind="rung", at=restart, id="r1", rung="restart", source="alert"),
        HistoryEntry(kind="crawl", at=cpu - 1, alertname="BFMShardStalled"),
        HistoryEntry(kind="rung", at=cpu, id="r2", rung="cpu", source="alert")])
    ev = ShardEvidence("s", batches=b, ladder=ladder,
                       rungs=[m for m in map(ladder_marker, ladder.history) if m is not None])
    return ev, {"onset": onset, "alert": alert, "stall_from": stall_from, "cpu": cpu,
                "stall_alert": cpu - 1}


def _x(t: float) -> float:
    return float(date2num(datetime.fromtimestamp(t, tz=timezone.utc)))


def _vlines(ax: Any, colour: str) -> list[float]:
    """The x of each vertical line (``axvline``) drawn in ``colour``."""
    from matplotlib.colors import to_rgba

    return sorted(float(date2num(line.get_xdata()[0])) for line in ax.get_lines()
                  if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]
                  and to_rgba(line.get_color()) == to_rgba(colour))


def test_the_chart_explains_the_delay_before_each_rung() -> None:
    ev, at = _crawl_then_cpu()
    fig = chart.draw_shard_chart(ev, [])
    top = fig.axes[0]
    # Onsets: the first slow batch's start; the stalled batch's start.
    assert _vlines(top, chart.ONSET_COLOUR) == pytest.approx(
        [_x(at["onset"]), _x(at["stall_from"])])
    # Alerts: from when they began firing (startsAt), else when judged.
    assert _vlines(top, chart.ALERT_COLOUR) == pytest.approx(
        [_x(at["alert"]), _x(at["stall_alert"])])
    hatched = [p for p in top.patches if p.get_hatch() == chart.STALL_HATCH]
    assert len(hatched) == 1
    span = hatched[0]                   # a Rectangle in data x, axes-fraction y
    assert span.get_x() == pytest.approx(_x(at["stall_from"]))
    assert span.get_x() + span.get_width() == pytest.approx(_x(at["cpu"]))


def test_one_legend_entry_per_meaning_and_vram_as_steps() -> None:
    ev, _ = _crawl_then_cpu()
    samples = [VramSample(t=T0 + 10 * i, gpu="0", used_bytes=(i % 4) << 30,
                          total_bytes=12 << 30) for i in range(40)]
    fig = chart.draw_shard_chart(ev, samples)
    top, vram = fig.axes[0], fig.axes[1]
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert len(labels) == len(set(labels)), labels
    # Two devices, one baseline and one threshold entry.
    assert labels.count("baseline") == 1
    assert sum("threshold" in label for label in labels) == 1
    for meaning in ("batches on backfill/cuda:0", "batches on backfill/cpu", "alert firing",
                    chart.STALL_LABEL, "rung: restart", "rung: cpu"):
        assert any(label.startswith(meaning) for label in labels), (meaning, labels)
    assert any(label.startswith("onset") for label in labels)
    steps = [line for line in vram.get_lines() if len(line.get_xdata()) > 2]
    assert len(steps) == 3 and all(line.get_drawstyle() == "steps-post" for line in steps)
    vram_labels = [t.get_text() for t in vram.get_legend().get_texts()]
    assert len(vram_labels) == len(set(vram_labels)) == 3


def test_the_time_axis_reads_as_clock_time() -> None:
    ev, _ = _crawl_then_cpu()
    fig = chart.draw_shard_chart(ev, [])
    formatter = fig.axes[-1].xaxis.get_major_formatter()
    assert isinstance(formatter, DateFormatter)
    assert formatter(_x(T0 + 3723)) == "01:02:03"
    assert "2026-06-10" in fig.axes[-1].get_xlabel()
    long = ShardEvidence("l", batches=[_batch(T0 + 100, 1, "cuda:0", 16.0),
                                       _batch(T0 + 10 * 3600, 1, "cuda:0", 16.0)])
    assert chart.draw_shard_chart(long, []).axes[-1].xaxis.get_major_formatter()(
        _x(T0 + 3723)) == "01:02"


def test_the_summary_labels_redone_work_and_spells_the_state_dir_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crawlguard.kernel.formats.batchlog import BatchWriter
    from crawlguard.kernel.statedir import StateDir

    state = StateDir(tmp_path / "state")
    # Launch 1 is told 960 genes and logs 24 x 24 = 576 before it is killed; what it had
    # not saved (24 genes) launch 2 does again, with the 408 left: 984 processed.
    first = BatchWriter(state.batches_file("s"), stage="backfill", device="cuda:0", gpu="0",
                        pid=1, factor=5.0)
    for i in range(24):
        first.append(T0 + i, 24.0, 1.0, 24.0, 24.0, 24.0, 0, total=960,
                     remaining=960.0 - 24 * (i + 1))
    first.close()
    second = BatchWriter(state.batches_file("s"), stage="backfill", device="cuda:0", gpu="0",
                         pid=2, factor=5.0)
    for i in range(17):
        second.append(T0 + 100 + i, 24.0, 1.0, 24.0, 24.0, 24.0, 0, total=408,
                      remaining=408.0 - 24 * (i + 1))
    second.close()
    monkeypatch.chdir(tmp_path)
    md = summary_markdown(load_run("state"))
    assert "984 genes processed, 960 unique, 24 redone after restarts" in md
    assert "| s | 984 (960 unique) |" in md
    assert f"State dir: `{tmp_path / 'state'}`" in md


def test_a_batch_the_live_worker_is_still_in_is_drawn_as_a_stall_up_to_now(
        tmp_path: Path) -> None:
    """A report during a stall: the running worker (this test's own process, registered)
    finished its last line long ago; a dead worker's silence is no stall."""
    from crawlguard.kernel.statedir import StateDir
    from crawlguard.kernel.workers import register_worker

    state = StateDir(tmp_path / "state")
    state.batches_file("s").parent.mkdir(parents=True)
    me = os.getpid()
    lines = [_batch(T0 + 4 * (i + 1), me, "cuda:0", 16.0) for i in range(5)]
    state.batches_file("s").write_text(
        "".join(b.model_dump_json() + "\n" for b in lines))
    register_worker(state, "s")
    (ev,) = load_run(state.root).shards
    assert ev.live_pid == me
    now = T0 + 20 + 60                      # 60 s into a batch due in 4
    assert ev.stalls(now) == [(T0 + 20, now)] and ev.stalls(T0 + 25) == []
    fig = chart.draw_shard_chart(ev, [], now=now)
    (span,) = [p for p in fig.axes[0].patches if p.get_hatch() == chart.STALL_HATCH]
    assert span.get_x() + span.get_width() == pytest.approx(_x(now))
    assert "- stalled batch: from" in summary_markdown(load_run(state.root), now=now)
    assert "(running still)" in summary_markdown(load_run(state.root), now=now)
    ev.live_pid = None                      # the worker is gone: nothing runs still
    assert ev.stalls(now) == []
