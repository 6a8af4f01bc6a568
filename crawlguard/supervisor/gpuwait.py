"""Waiting, bounded, until a dead worker's GPU memory is released.

The driver frees a dead process's VRAM asynchronously; relaunching at once can
start the fresh context on a GPU that is still full, which is the crawl we
just escaped. The measure has to work with every VRAM source, NVML included,
and NVML cannot attribute memory to processes under WDDM (per-process
``usedGpuMemory`` reads "not available" there), so it is level-based:

- just before a launch, read the device-wide used bytes of the worker's GPU:
  ``before`` is what everybody else holds;
- while the worker lives, keep the highest reading (``peak``);
- after it died, wait until used <= before + slack, where slack is the larger
  of 256 MiB (other processes' ordinary jitter) and 10% of what the worker
  held (peak - before), or until ``gpu_release_timeout`` passes.

A worker that held nothing measurable (it crashed at import, or ran on CPU)
makes no wait at all, because the level is already back. A source that cannot
be read makes no wait either: crawlguard cannot wait for what it cannot see,
and says so. On CPU (the device variable says ``cpu``) there is nothing to wait for; which
GPU a launch uses is ``crawlguard.kernel.devices.gpu_of_launch``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from crawlguard.gpu.vram import VramSource
from crawlguard.kernel.errors import VramError

MIN_SLACK_BYTES = 256 << 20
SLACK_SHARE = 0.10


@dataclass
class WaitResult:
    released: bool
    waited: float
    detail: str


class GpuRelease:
    """Readings of one GPU around one worker's life."""

    def __init__(self, source: VramSource, gpu: int) -> None:
        self.source = source
        self.gpu = gpu
        self.before: int | None = None
        self.peak: int | None = None
        self.error: str | None = None

    def read(self) -> int | None:
        try:
            for g in self.source.read():
                if g.index == self.gpu:
                    self.error = None
                    return g.used_bytes
            self.error = f"{self.source.name} reports no GPU {self.gpu}"
        except VramError as exc:
            self.error = str(exc)
        return None

    def at_launch(self) -> None:
        self.before = self.peak = self.read()

    def sample(self) -> None:
        used = self.read()
        if used is not None and (self.peak is None or used > self.peak):
            self.peak = used

    @property
    def level(self) -> int | None:
        """Used bytes at or below which the worker's memory counts as released."""
        if self.before is None:
            return None
        held = max(0, (self.peak or self.before) - self.before)
        return self.before + max(MIN_SLACK_BYTES, round(SLACK_SHARE * held))

    def wait(self, timeout: float, stop: threading.Event, poll: float = 0.1,
             clock: Callable[[], float] = time.monotonic) -> WaitResult:
        start = clock()
        level = self.level
        if level is None:
            return WaitResult(False, 0.0, f"not measured ({self.error or 'no reading'})")
        while True:
            used = self.read()
            waited = clock() - start
            if used is None:
                return WaitResult(False, waited, f"not measured ({self.error})")
            if used <= level:
                return WaitResult(True, waited, f"GPU {self.gpu} at {used / 2**30:.2f} GiB "
                                                f"after {waited:.1f}s")
            if waited >= timeout or stop.is_set():
                return WaitResult(False, waited, f"GPU {self.gpu} still at "
                                  f"{used / 2**30:.2f} GiB after {waited:.1f}s "
                                  "(HELIX_BFM_GPU_RELEASE_TIMEOUT); relaunching anyway")
            stop.wait(poll)
