"""A fire drill's spill evidence: served for the drilled worker alone (pid AND creation
time), with or without a shared-memory source, and only while the drill is live."""

from __future__ import annotations

from pathlib import Path

from crawlguard.exporter.sharedcollector import SharedMemoryCollector
from crawlguard.gpu.shared import PdhSharedSource
from crawlguard.kernel import drills
from crawlguard.kernel.formats.schema import WorkerJson
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import WorkerIdentity
from tests.gpu.test_shared import MIB, FakePdh, inst, scrape, write_worker

NAME = "bfm_worker_shared_memory_bytes"
ALPHA = ("alpha", "backfill", "cuda:0", "0")
BETA = ("beta", "backfill", "cuda:0", "0")
TWIN = ("twin", "backfill", "cuda:1", "1")
ME = WorkerIdentity.current()


def setup(tmp_path: Path, *, drill_process: WorkerIdentity = ME, until: float = 2e9,
          shard: str = "alpha") -> StateDir:
    state = StateDir(tmp_path / "state")
    write_worker(state.metrics_dir, "10-1000", ALPHA)
    write_worker(state.metrics_dir, "20-2000", BETA)
    write_worker(state.metrics_dir, "10-7000", TWIN)   # pid 10 again: another process
    drills.write_drill(state, drills.DrillFile(
        id="d1", shard=shard, worker=WorkerJson(pid=10, create_time=1.0),
        drill=WorkerJson.of(drill_process), started_at=1.0, until=until,
        shared_bytes=1024 * MIB))
    return state


def test_without_a_source_only_the_drilled_worker_gets_evidence(tmp_path: Path) -> None:
    state = setup(tmp_path)
    got = scrape(SharedMemoryCollector(state.metrics_dir, None, state))
    assert got == {(NAME, "", *ALPHA): 1024 * MIB}   # not beta, not pid 10's twin; no _up


def test_with_a_source_the_drill_raises_its_workers_reading_only(tmp_path: Path) -> None:
    state = setup(tmp_path)
    pdh = FakePdh({inst(10): 5 * MIB, inst(20): 7 * MIB})
    got = scrape(SharedMemoryCollector(state.metrics_dir, PdhSharedSource(pdh), state))
    assert got[(NAME, "", *ALPHA)] == 1024 * MIB
    assert got[(NAME, "", *BETA)] == 7 * MIB
    assert got[(NAME, "", *TWIN)] == 5 * MIB        # the real reading of the same pid
    assert got[("bfm_shared_memory_source_up", "pdh", "", "", "", "")] == 1.0


def test_a_drill_that_is_over_or_whose_process_is_gone_adds_nothing(tmp_path: Path) -> None:
    dead = WorkerIdentity(ME.pid, ME.create_time - 3)
    for state in (setup(tmp_path / "a", drill_process=dead), setup(tmp_path / "b", until=2.0)):
        assert scrape(SharedMemoryCollector(state.metrics_dir, None, state)) == {}
    # No collector sees anything without a drill at all.
    state = StateDir(tmp_path / "c")
    write_worker(state.metrics_dir, "10-1000", ALPHA)
    assert scrape(SharedMemoryCollector(state.metrics_dir, None, state)) == {}
