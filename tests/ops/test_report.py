"""`crawlguard report` on a recorded run: charts, summary, bad lines, no matplotlib."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from crawlguard.kernel.formats.auditlog import AuditLine
from crawlguard.kernel.formats.ladderfile import HistoryEntry
from crawlguard.report.evidence import audit_marker, ladder_marker, load_run
from crawlguard.report.summary import fmt_time, summary_markdown
from tests.helpers import REPO, crawlguard_cmd

from .recorded_run import write_recorded_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data.rstrip(b"\0").endswith(b"IEND\xaeB`\x82"), f"{path} is cut short"
    return int(width), int(height)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    root = tmp_path_factory.mktemp("run") / "state"
    return root, write_recorded_run(root)


Rendered = tuple[Path, "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="module")
def rendered(recorded: tuple[Path, dict[str, float]],
             tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """One real `crawlguard report` run (a subprocess: the CLI as users run it)."""
    state, _ = recorded
    out = tmp_path_factory.mktemp("report")
    proc = subprocess.run(crawlguard_cmd("report", "--state-dir", str(state), "--out", str(out)),
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    return out, proc


def test_report_writes_a_png_per_shard_and_a_summary(
        rendered: Rendered) -> None:
    out, proc = rendered
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for shard in ("wiki", "slack__eng-oncall"):
        width, height = png_size(out / f"{shard}.png")
        assert 800 <= width <= 2000 and 400 <= height <= 1200, (shard, width, height)
        assert (out / f"{shard}.png").stat().st_size > 20_000  # drawn, not blank
    assert (out / "report.md").is_file()


def test_summary_has_the_numbers(rendered: Rendered,
                                 recorded: tuple[Path, dict[str, float]]) -> None:
    out, _ = rendered
    _, times = recorded
    md = (out / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| slack__eng-oncall |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # shard, genes, batches, baseline, crawls, rungs, final device, time lost
    assert cells[1] == str(64 * (24 + 20 + 30))
    assert cells[2] == "74"
    assert cells[3].startswith("15.3 (cuda:0)") and "(cpu)" in cells[3]
    assert cells[4] == "2"
    assert cells[5] == f"restart {fmt_time(times['restart'])}, cpu {fmt_time(times['cpu'])}"
    assert cells[6] == "cpu"
    assert cells[7].endswith(" h")  # eight 0.02 genes/s batches alone are ~7 h
    healthy = next(line for line in md.splitlines() if line.startswith("| wiki |"))
    assert "| 3840 | 60 |" in healthy and healthy.rstrip().endswith("| cuda:0 | 0 s |")
    assert "`BGEM3_DEVICE=cpu`" in md
    assert "peak dedicated VRAM: 11.85 GiB / 12.00 GiB on GPU 0" in md
    assert "![wiki](wiki.png)" in md
    # Only rungs are rung markers: the crawl and same_episode entries are not.
    assert md.count("| restart | signalled |") == 1 and md.count("| cpu | signalled |") == 1


def test_unreadable_lines_are_skipped_and_counted(
        rendered: Rendered) -> None:
    out, proc = rendered
    # batches.jsonl: a line cut in half, a garbage line, a line being written.
    assert "skipped 3 unreadable line(s) of shards/slack__eng-oncall/batches.jsonl" in proc.stderr
    assert "skipped 1 unreadable line(s) of audit.jsonl" in proc.stderr
    assert "shards/slack__eng-oncall/batches.jsonl: 3" in (out / "report.md").read_text()


def test_audit_log_marks_rungs_when_the_ladder_is_gone(
        recorded: tuple[Path, dict[str, float]], tmp_path: Path) -> None:
    state, times = recorded
    copy = tmp_path / "state"
    subprocess.run(["cp", "-a", str(state), str(copy)], check=True)
    ladder = copy / "shards" / "slack__eng-oncall" / "ladder.json"
    ladder.write_text('{"shard": "slack__eng-oncall", "hist')  # corrupt
    run = load_run(copy)
    ev = next(s for s in run.shards if s.shard == "slack__eng-oncall")
    assert ev.ladder_error and "not valid JSON" in ev.ladder_error
    assert [(r.rung, r.t, r.source) for r in ev.rungs] == [("restart", times["restart"], "audit")]
    assert "ladder.json unreadable" in summary_markdown(run)


def test_rung_markers_are_read_with_the_writers_keys_only() -> None:
    def entry(**kw: object) -> HistoryEntry:
        return HistoryEntry.model_validate(kw, strict=True)

    def line(**kw: object) -> AuditLine:
        return AuditLine.model_validate(kw, strict=True)

    assert ladder_marker(entry(kind="rung", rung="cpu", at=5.0)) is not None
    assert ladder_marker(entry(kind="refused", rung="cpu", at=5.0)) is None
    assert ladder_marker(entry(kind="reset", at=5.0)) is not None
    assert ladder_marker(entry(kind="rung", rung="next", at=5.0)) is None
    assert audit_marker(line(event="rung_done", rung="cpu", at=5.0)) is not None
    assert audit_marker(line(event="rung_decided", rung="cpu", at=5.0)) is None
    assert audit_marker(line(event="alert", decision="rung", at=5.0)) is None
    assert audit_marker(line(event="reset", at=5.0, shard="s")) is not None


def test_report_without_state_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(crawlguard_cmd("report", "--state-dir", str(tmp_path / "nope"),
                                         "--no-charts"),
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_matplotlib_gives_a_clear_message(recorded: tuple[Path, dict[str, float]],
                                                  tmp_path: Path) -> None:
    state, _ = recorded
    # A meta-path finder that refuses matplotlib, as on an install without the extra.
    code = (
        "import sys\n"
        "class NoMpl:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'matplotlib' or name.startswith('matplotlib.'):\n"
        "            raise ImportError('No module named ' + repr(name))\n"
        "sys.meta_path.insert(0, NoMpl())\n"
        "from crawlguard.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "out"
    argv = [sys.executable, "-c", code, "report", "--state-dir", str(state), "--out", str(out)]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "crawlguard[report]" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()  # nothing half-written
    # The summary alone still works without it.
    proc = subprocess.run([*argv, "--no-charts"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.md").is_file() and not list(out.glob("*.png"))


def test_report_during_a_rebuild_reads_a_growing_file(tmp_path: Path) -> None:
    shard = tmp_path / "state" / "shards" / "live"
    shard.mkdir(parents=True)
    line = {"t": 1.0e9, "stage": "drain", "device": "cuda:0", "gpu": "0", "pid": 1,
            "genes": 64, "seconds": 4.0, "rate": 16.0, "ema": None, "baseline": None,
            "streak": 0, "factor": 5}
    (shard / "batches.jsonl").write_text(json.dumps(line) + "\n" + json.dumps(line)[:30])
    run = load_run(tmp_path / "state")
    assert len(run.shards[0].batches) == 1 and run.shards[0].skipped_lines == 1
    md = summary_markdown(run)
    assert "| live | 64 | 1 | - | 0 | - | cuda:0 | 0 s |" in md


def test_a_stalled_batch_cut_short_by_a_rung_counts_as_time_lost() -> None:
    """Incident 2: the crawling batch never finishes, so only the rung bounds it."""
    from crawlguard.kernel.formats.batchlog import Batch
    from crawlguard.report.evidence import RungEvent, ShardEvidence

    def batch(t: float) -> Batch:
        return Batch(t=t, stage="backfill", device="cuda:0", gpu="0", pid=1, genes=64,
                     seconds=64 / 16, rate=16.0, ema=16.0, baseline=16.0, streak=0, factor=5)

    ev = ShardEvidence("slack__eng-oncall", batches=[batch(100.0), batch(104.0)],
                       rungs=[RungEvent(t=304.0, rung="restart", outcome="signalled",
                                        reason="BFMShardStalled", source="ladder")])
    # 200 s since the last finished batch, of which one batch (4 s) was due anyway.
    assert ev.unfinished_lost_seconds == 196.0
    assert ev.lost_seconds == 196.0 and ev.slow_batches == 0


def test_charts_leave_the_process_backend_alone(recorded: tuple[Path, dict[str, float]],
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A program that imports crawlguard keeps its own matplotlib backend."""
    import matplotlib

    from crawlguard.report.chart import render_shard_chart

    def use(backend: str, force: bool = True) -> None:
        raise AssertionError(f"the report switched the process's backend to {backend}")

    monkeypatch.setattr(matplotlib, "use", use)
    had_pyplot = "matplotlib.pyplot" in sys.modules
    state, _ = recorded
    run = load_run(state, ["wiki"])
    path = render_shard_chart(run.shards[0], run.vram, tmp_path / "wiki.png")
    assert png_size(path)[0] > 0
    assert had_pyplot or "matplotlib.pyplot" not in sys.modules


def test_report_charts_and_counts_ooms(tmp_path: Path) -> None:
    from crawlguard.kernel import oom
    from crawlguard.kernel.statedir import StateDir
    from crawlguard.report.chart import render_shard_chart

    state = StateDir(tmp_path / "state")
    state.batches_file("docs").parent.mkdir(parents=True)
    lines = [{"t": 1000.0 + i, "genes": 8, "seconds": 1.0, "rate": 8.0, "ema": 8.0,
              "baseline": 8.0, "streak": 0, "stage": "backfill", "device": "cuda:0",
              "gpu": "0", "factor": 5} for i in range(10)]
    state.batches_file("docs").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for pid, at, recovered in ((41, 1003.5, True), (42, 1006.5, False), (43, 1009.5, False)):
        oom.write_record(state, oom.OomRecord(
            shard="docs", stage="backfill", device="cuda:0", gpu="0", pid=pid,
            create_time=900.0, at=at, genes=8.0, error="OutOfMemoryError: CUDA out of memory",
            recovered=recovered))
    (ev,) = load_run(state.root).shards
    assert [r.pid for r in ev.ooms] == [41, 42, 43] and ev.oom_deaths == 2
    text = summary_markdown(load_run(state.root))
    assert "- out-of-memory batches: 3 in 3 worker(s), 2 of them died of it" in text
    assert "pid 41 at" in text and "(survived)" in text
    png = render_shard_chart(ev, [], tmp_path / "docs.png")
    assert png_size(png)[0] > 800
