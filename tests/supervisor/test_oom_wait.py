"""The supervisor holds an OOM death's relaunch until the sidecar took its alert."""

from __future__ import annotations

import threading
from pathlib import Path

from crawlguard.kernel import oom
from crawlguard.kernel.statedir import StateDir, write_json_atomic
from crawlguard.kernel.workers import WorkerIdentity
from crawlguard.supervisor.oomwait import acknowledged, death_record, wait_for_verdict


def _record(pid: int, at: float) -> oom.OomRecord:
    return oom.OomRecord(shard="docs", stage="backfill", device="cuda:0", gpu="0", pid=pid,
                         create_time=1000.0, at=at, genes=8.0, error="OOM")


def test_supervisor_waits_for_the_sidecar_to_take_the_oom(state_dir: Path) -> None:
    state = StateDir(state_dir)
    oom.write_record(state, _record(40, 5000.0))
    rec = death_record(state, "docs", 40, since=4990.0)
    assert rec is not None and death_record(state, "docs", 41, since=4990.0) is None
    assert death_record(state, "docs", 40, since=5001.0) is None  # an older launch's
    assert not acknowledged(state, "docs", rec)
    ticks = iter(range(100))
    taken, waited = wait_for_verdict(state, "docs", rec, 3.0, threading.Event(),
                                     clock=lambda: next(ticks) * 1.0)
    assert (taken, waited) == (False, 3.0)
    write_json_atomic(state.ladder_file("docs"), {"history": [
        {"kind": "crawl", "at": 4999.0, "alertname": "BFMShardOOM"},   # an earlier death
        {"kind": "crawl", "at": 5003.0, "alertname": "BFMShardCrawl"}]})
    assert not acknowledged(state, "docs", rec)
    write_json_atomic(state.ladder_file("docs"), {"history": [
        {"kind": "crawl", "at": 5004.0, "alertname": "BFMShardOOM"}]})
    assert wait_for_verdict(state, "docs", rec, 3.0, threading.Event())[0]
    assert WorkerIdentity.from_key(rec.key) == WorkerIdentity(40, 1000.0)
