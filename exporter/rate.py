"""The rate signature, as pure arithmetic over batches (no clock, no I/O).

Per (shard, stage, device) and per worker process:

- the first ``warmup_batches`` batches are ignored (model load, allocator
  warm-up);
- the EMA of genes/s is updated once per batch, so it is batch-indexed: a long
  shard and a short one are judged alike, unlike a wall-clock timer;
- the baseline is the median rate of the ``baseline_batches`` batches after
  warm-up, unless a baseline was persisted for this (shard, stage, device) by
  an earlier worker, in which case that one is kept: a worker restarted in the
  middle of a crawl must be judged against the rate the shard had before it
  spilled, not against its own crawling first batches;
- the streak counts consecutive batches whose EMA is below baseline / factor,
  and the signature holds (``crawling``) once the streak reaches the window.

VRAM fullness is deliberately not part of this: the exporter and the alert
rules join it on the ``gpu`` label, where the reading actually lives.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import NamedTuple

from crawlguard.kernel.settings import Detection


class Verdict(NamedTuple):
    """The state after one batch; what the tracker publishes.

    A NamedTuple rather than a frozen dataclass: one is built per batch and
    the tuple costs a fraction of a frozen dataclass's ``__init__``.
    """

    rate: float
    ema: float | None
    baseline: float | None
    streak: int
    crawling: bool
    baseline_established: bool
    """True exactly on the batch that completed the baseline (persist it now)."""


@dataclass
class RateState:
    detection: Detection
    baseline: float | None = None
    baseline_samples: list[float] = field(default_factory=list)
    ema: float | None = None
    streak: int = 0
    batches: int = 0

    @property
    def threshold(self) -> float | None:
        """The EMA below which a batch counts as slow."""
        if self.baseline is None:
            return None
        return self.baseline / self.detection.factor

    @property
    def crawling(self) -> bool:
        return self.baseline is not None and self.streak >= self.detection.window

    def observe(self, genes: float, seconds: float) -> Verdict:
        if not (math.isfinite(genes) and genes >= 0):
            raise ValueError(f"genes must be a finite number >= 0, got {genes!r}")
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self.batches += 1
        # A zero-length batch (coarse timer) would make an infinite rate.
        rate = genes / max(seconds, 1e-6)
        established = False
        if self.batches > self.detection.warmup_batches and genes > 0:
            alpha = self.detection.ema_alpha
            self.ema = rate if self.ema is None else alpha * rate + (1 - alpha) * self.ema
            if self.baseline is None:
                self.baseline_samples.append(rate)
                if len(self.baseline_samples) >= self.detection.baseline_batches:
                    self.baseline = statistics.median(self.baseline_samples)
                    established = True
            elif self.ema < self.baseline / self.detection.factor:
                self.streak += 1
            else:
                self.streak = 0
        return Verdict(rate, self.ema, self.baseline, self.streak, self.crawling, established)
