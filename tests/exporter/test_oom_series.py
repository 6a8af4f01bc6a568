"""OOM records: written by the tracker, served by the exporter only for deaths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from crawlguard.exporter.oomseries import SERVE_S, OomCollector
from crawlguard.kernel import oom
from crawlguard.kernel.statedir import StateDir


def _record(pid: int, at: float, recovered: bool = False) -> oom.OomRecord:
    return oom.OomRecord(shard="docs", stage="backfill", device="cuda:0", gpu="0", pid=pid,
                         create_time=1000.0, at=at, genes=8.0,
                         error="OutOfMemoryError: CUDA out of memory", recovered=recovered)


def _served(collector: OomCollector) -> dict[str, float]:
    (family,) = collector.collect()
    return {s.labels["worker"]: s.value for s in family.samples}


def test_only_deaths_are_served_and_only_for_a_while(state_dir: Path) -> None:
    state = StateDir(state_dir)
    alive = {41}
    for pid, recovered in ((40, False), (41, False), (42, True)):
        oom.write_record(state, _record(pid, 5000.0, recovered))
    now = [5010.0]
    collector = OomCollector(state, lambda ident: ident.pid in alive, clock=lambda: now[0])
    # 41 is still alive (unwinding, or the build caught it); 42 survived it.
    assert _served(collector) == {"40-1000000": 5000.0}
    alive.clear()
    assert set(_served(collector)) == {"40-1000000", "41-1000000"}
    (family,) = collector.collect()
    assert {s.labels["pid"] for s in family.samples} == {"40", "41"}
    now[0] = 5000.0 + SERVE_S + 1
    assert _served(collector) == {}


def test_a_second_oom_of_one_worker_bumps_its_record(state_dir: Path) -> None:
    state = StateDir(state_dir)
    oom.write_record(state, _record(40, 5000.0))
    oom.write_record(state, _record(40, 5001.0))
    (rec,) = oom.read_records(state, "docs")
    assert rec.count == 2 and rec.at == 5001.0
    # A corrupt record is skipped, not fatal.
    (oom.oom_dir(state, "docs") / "junk.json").write_text("{not json")
    assert len(oom.read_records(state, "docs")) == 1


def test_oom_is_recognised_by_class_without_importing_torch() -> None:
    code = (
        "import sys, types\n"
        "from crawlguard.kernel.oom import is_oom\n"
        "OOM = type('OutOfMemoryError', (RuntimeError,), {'__module__': 'torch.cuda'})\n"
        "print(is_oom(OOM('x')), is_oom(RuntimeError('CUDA out of memory. Tried')),\n"
        "      is_oom(RuntimeError('other')), is_oom(MemoryError()), 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2]).stdout
    assert out.split() == ["True", "True", "False", "False", "False"]
