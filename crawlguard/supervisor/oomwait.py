"""Before relaunching a worker that died of OOM: wait for the sidecar's verdict.

The worker's tracker wrote an OOM record (``crawlguard.kernel.oom``) before the
exception killed it. The exporter serves it, the alert rule fires, the sidecar
climbs the ladder and, on the second OOM death, writes ``BGEM3_DEVICE=cpu``
into the shard's resume overrides. The supervisor relaunches at once after any
other death; after an OOM death it first waits, bounded by
HELIX_BFM_OOM_WAIT_SECONDS, until the shard's ladder shows a BFMShardOOM
alert taken after the OOM (whatever was decided: a rung, the same episode,
alert only), so the environment it then re-reads is the one the rung meant.
Without a sidecar the wait simply runs out and the relaunch goes ahead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from crawlguard.kernel import oom
from crawlguard.kernel.errors import StateError
from crawlguard.kernel.statedir import StateDir, read_json

OOM_ALERT = "BFMShardOOM"
POLL_S = 0.2


def death_record(state: StateDir, shard: str, pid: int, since: float) -> oom.OomRecord | None:
    """The unrecovered OOM record of worker ``pid`` written at or after ``since``."""
    for rec in reversed(oom.read_records(state, shard)):
        if rec.pid == pid and rec.at >= since and not rec.recovered:
            return rec
    return None


def acknowledged(state: StateDir, shard: str, record: oom.OomRecord) -> bool:
    """The ladder has taken a BFMShardOOM alert since ``record``'s OOM."""
    try:
        data = read_json(state.ladder_file(shard))
    except StateError:
        return False
    history = data.get("history") if isinstance(data, dict) else None
    if not isinstance(history, list):
        return False
    for entry in reversed(history):
        if (isinstance(entry, dict) and entry.get("alertname") == OOM_ALERT
                and isinstance(entry.get("at"), (int, float)) and entry["at"] >= record.at):
            return True
    return False


def wait_for_verdict(state: StateDir, shard: str, record: oom.OomRecord, timeout: float,
                     stop: threading.Event,
                     clock: Callable[[], float] = time.monotonic) -> tuple[bool, float]:
    """(acknowledged, seconds waited); stops early when ``stop`` is set."""
    start = clock()
    while True:
        if acknowledged(state, shard, record):
            return True, clock() - start
        waited = clock() - start
        if waited >= timeout or stop.is_set():
            return False, waited
        stop.wait(min(POLL_S, timeout - waited))
