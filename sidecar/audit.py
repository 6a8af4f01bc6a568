"""The sidecar's audit log: one JSON object per line in ``<state>/audit.jsonl``.

Every decision is written here (alerts received and how each was judged,
rungs decided and their outcomes, manual requests, resets, pause/resume),
including those ``ladder.json`` keeps no trace of, such as exact repeats. It is
for people after the fact; the ladder files stay the only source of truth, so
lines are flushed but not fsynced (an fsync per repeat of a repeating alert
would cost more than a lost last line after a power cut is worth).

Each line has ``at`` (unix seconds) and ``event``; the other fields depend on
the event, for example::

    {"at": 1714557600.1, "event": "alert", "shard": "confluence",
     "alertname": "BFMShardCrawl", "status": "firing", "fingerprint": "...",
     "decision": "rung", "note": "restart decided (BFMShardCrawl crawl #1)"}
    {"at": 1714557601.3, "event": "rung_done", "shard": "confluence", "id": "r1",
     "rung": "restart", "outcome": "signalled", "effective_at": 1714557601.3}
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from crawlguard.kernel.errors import StateError
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.statedir import check_present
from crawlguard.kernel.workers import WorkerIdentity

log = get_logger(__name__)


class AuditLog:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._fh: TextIO | None = None

    def write(self, event: str, **fields: Any) -> None:
        line = json.dumps({"at": self._clock(), "event": event, **fields}, sort_keys=True,
                          default=str)
        with self._lock:
            try:
                if self._fh is None:
                    check_present(self.path)
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    # Kept open: reopening per line cost more than judging the alert.
                    self._fh = self.path.open("a", encoding="utf-8")
                self._fh.write(line + "\n")
                self._fh.flush()
            except (OSError, StateError) as exc:
                # The audit trail must never stop a rung; the logger still has it.
                log.error("cannot append to %s: %s; event was %s", self.path, exc, line)
                self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self._fh is not None:
                self._fh.close()
        self._fh = None

    def read(self) -> list[dict[str, Any]]:
        """Every entry, oldest first (for tests and the report)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def worker_json(worker: WorkerIdentity | None) -> dict[str, Any] | None:
    """A worker identity as audit lines and ladder files write it."""
    return None if worker is None else {"pid": worker.pid, "create_time": worker.create_time}
