"""The sidecar's audit log, ``<state>/audit.jsonl``: appending its lines.

What a line holds, and reading them back, is ``crawlguard.kernel.formats.auditlog``.
Lines are flushed but not fsynced: the ladder files are the source of truth
and are fsynced before every answer; an fsync per repeat of a repeating alert
would cost more than a lost last line after a power cut is worth.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from crawlguard.kernel.errors import StateError
from crawlguard.kernel.formats import auditlog
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.statedir import check_present

log = get_logger(__name__)


class AuditLog:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._fh: TextIO | None = None

    def write(self, event: str, **fields: Any) -> None:
        line = auditlog.line(self._clock(), event, fields)
        with self._lock:
            try:
                if self._fh is None:
                    check_present(self.path)
                    self.path.parent.mkdir(parents=True, exist_ok=True)
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
