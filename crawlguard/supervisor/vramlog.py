"""VRAM samples for the evidence: ``<state>/vram.jsonl``, one line per GPU per sample.

The supervisor takes them while it waits on workers, at most once per
``interval`` seconds, and ``crawlguard report`` charts them (the format is
``crawlguard.kernel.formats.vramlog``). A failing source or disk only loses
samples, never the rebuild.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from crawlguard.gpu.vram import VramSource
from crawlguard.kernel.errors import StateError, VramError
from crawlguard.kernel.formats import vramlog
from crawlguard.kernel.statedir import StateDir


class VramLog:
    def __init__(self, state: StateDir, source: VramSource | None, interval: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = state.vram_log
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
        with contextlib.suppress(StateError, ValueError):  # ValueError: a reading no sample holds
            vramlog.append(self.path, [
                vramlog.VramSample(t=now, gpu=str(g.index), used_bytes=g.used_bytes,
                                   total_bytes=g.total_bytes) for g in gpus])
