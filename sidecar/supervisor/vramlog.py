"""VRAM samples for the evidence: ``<state>/vram.jsonl``, one line per GPU per sample.

``crawlguard report`` (sidecar/report/) charts them beside each shard's
rates: the evidence that a crawl happened with dedicated VRAM pinned, and that
the CPU rung let it go. The supervisor writes them while it waits on workers,
at most once per ``interval`` seconds; a failing source or disk only loses
samples, never the rebuild.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

from crawlguard.errors import VramError
from crawlguard.statedir import StateDir
from exporter.vram import VramSource

FILE_NAME = "vram.jsonl"
"""The name sidecar/report/evidence.py reads: {"t", "gpu", "used_bytes", "total_bytes"}."""


class VramLog:
    def __init__(self, state: StateDir, source: VramSource | None, interval: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = state.root / FILE_NAME
        self.source = source
        self.interval = interval
        self.clock = clock
        self._last = float("-inf")

    def tick(self) -> None:
        if self.source is None or self.interval <= 0:
            return
        now = self.clock()
        if now - self._last < self.interval:
            return
        self._last = now
        try:
            gpus = self.source.read()
        except VramError:
            return
        lines = "".join(json.dumps({"t": round(now, 3), "gpu": str(g.index),
                                    "used_bytes": g.used_bytes,
                                    "total_bytes": g.total_bytes}) + "\n" for g in gpus)
        with contextlib.suppress(OSError), open(self.path, "a", encoding="utf-8") as fh:
            fh.write(lines)
