"""The simulated device of one worker process: batch durations and VRAM claims.

``SimDevice.step(genes)`` is the model (how long this batch takes, and how the
context's VRAM grows); ``run_batch`` waits that long, interruptibly, so a
graceful stop abandons the batch in flight at once, as a real worker's
salvage would. bench/bench_rebuild.py steps the same model without waiting to
project the runs nobody wants to wait for.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from .profiles import GpuModel, Profile, Timing, fill_batches
from .simgpu import Claim


class Interrupted(Exception):
    """A graceful stop was requested while a batch was in flight."""


class EventLog:
    """``<data>/<shard>/sim.jsonl``: start, spill, stop and done of every worker."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, event: str, **fields: Any) -> None:
        row = {"t": round(time.time(), 4), "pid": os.getpid(), "event": event, **fields}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
        except OSError:
            pass  # evidence only; the rebuild must not fail for it


class SimDevice:
    def __init__(self, device: str, profile: Profile, total_batches: int, timing: Timing,
                 *, seed: str, claim: Claim | None = None, events: EventLog | None = None,
                 model: GpuModel | None = None) -> None:
        self.device = device
        self.is_gpu = device != "cpu"
        self.profile = profile
        self.timing = timing
        self.model = model or GpuModel()
        self.claim = claim
        self.events = events
        self.seed = seed
        self.fill = fill_batches(profile, total_batches) if self.is_gpu else None
        self.batches = 0
        self.genes = 0
        self.spilled_after: int | None = None
        """Process batch count at which the context spilled (None: not spilled)."""
        self.vram = 0

    @property
    def spilled(self) -> bool:
        return self.spilled_after is not None

    def load(self, stop: threading.Event) -> None:
        """Model load: the fresh context's memory, then the (scaled) load time."""
        self._claim(self.model.model_bytes if self.is_gpu else self.model.cpu_context_bytes)
        if stop.wait(self.timing.load_seconds / self.timing.time_scale):
            raise Interrupted
        self._event("start")

    def step(self, genes: int) -> float:
        """Seconds the next batch of ``genes`` takes; advances the model past it."""
        if self.spilled_after == self.batches:
            # The first batch of the spilled context starts now: the moment
            # detection delay is measured from.
            self._event("spill")
        rate = self.timing.gpu_rate if self.is_gpu else self.timing.cpu_rate
        noise = random.Random(f"{self.seed}:{self.batches}").uniform(-1.0, 1.0)
        rate *= 1.0 + self.timing.jitter * noise
        if self.batches == 0:
            rate /= 2.0  # allocator warm-up: the tracker ignores these batches
        if self.spilled_after is not None:
            rate *= self.profile.spilled_rate(self.batches - self.spilled_after)
        self.batches += 1
        self.genes += genes
        self._grow()
        return genes / rate

    def run_batch(self, genes: int, stop: threading.Event) -> None:
        seconds = self.step(genes)
        if stop.wait(seconds):
            raise Interrupted

    def _grow(self) -> None:
        if not self.is_gpu:
            return
        m = self.model
        if self.fill is None:
            # Levels off after ten batches, far from full.
            share = min(1.0, self.batches / 10)
            self._claim(m.model_bytes + round(share * (m.healthy_bytes - m.model_bytes)))
            return
        if self.spilled_after is not None:
            return
        share = min(1.0, self.batches / self.fill)
        if share >= 1.0:
            self.spilled_after = self.batches
        self._claim(m.model_bytes + round(share * (m.worker_spill_bytes - m.model_bytes)),
                    m.spilled_shared_bytes if self.spilled else None)

    def _claim(self, nbytes: int, shared_bytes: int | None = None) -> None:
        self.vram = nbytes
        if self.claim is not None:
            self.claim.set(nbytes, shared_bytes)

    def _event(self, event: str, **fields: Any) -> None:
        if self.events is not None:
            self.events.write(event, device=self.device, batch=self.batches, genes=self.genes,
                              vram=self.vram, **fields)

    def finish(self, event: str, **fields: Any) -> None:
        self._event(event, **fields)
