"""The rate signature, as pure arithmetic over batches (no clock, no I/O).

Per (shard, stage, device) and per worker process:

- the first ``warmup_batches`` batches are ignored (model load, allocator
  warm-up);
- every batch after them is judged by its **pace**: the seconds the work model
  (``workmodel.Envelope``) predicts for its shape over the seconds it took. The
  pace is unit-free, so a batch of one title and a batch of 2,000-token pages
  are judged alike, and so are a long shard and a short one (the EMA of the
  pace is batch-indexed, unlike a wall-clock timer). A pace above
  ``PACE_CAP`` counts as ``PACE_CAP``;
- only a batch of a **known** shape (``Envelope.known``: near a shape the model
  learnt while the shard was healthy) is evidence of the pace: its prediction
  rests on its own kind's time. A batch of a shape never run healthy can only
  be predicted by extrapolating from other shapes (a long document after tiny
  items, the shrinking tail of a length-sorted call, a title after pages), so
  it is **held**: it counts as the pace last judged (the better of the last
  ``HELD_OVER``, so that one slow batch, a pause, just before a change of
  shape is not carried on), on the reasoning that the shard runs at the pace it
  was last seen to run at until a batch that can be judged says otherwise. A
  slowdown under way is therefore neither reset nor frozen by a change of
  shape, and a healthy shard is not alarmed by one. (With nothing judged yet,
  as in a worker relaunched on a persisted baseline, the prediction is used.);
- the baseline is established on the ``baseline_batches`` batches after
  warm-up: the median of their paces (what "healthy" is, normalising the
  paces judged later) and the median of their genes/s (what the published
  rates are scaled to). It is persisted per (shard, stage, device), and a
  worker restarted in the middle of a crawl is judged against the baseline
  the shard had before it spilled, not against its own crawling first batches;
- the EMA is that of the ratio pace / baseline pace; the streak counts
  consecutive batches whose EMA is below 1 / factor, and the signature holds
  (``crawling``) once the streak reaches the window;
- the model learns from a batch (a new landmark, lower bounds) only while the
  EMA is at least ``SUSPECT_RATIO``: a shape first met during a crawl stays
  unknown, so the crawl is never taught to the model as that shape's pace. A
  batch of a known shape far faster than predicted (``workmodel.GLITCH``) is
  not learnt from either: it was timed wrong;
- a batch's **work** is the seconds its shape takes at the baseline's pace
  times the baseline's genes/s (gene-equivalents). The tracker publishes the
  work of the batch in flight, and the stall rule's limit is WINDOW x FACTOR x
  work / baseline: the time a whole window of crawling batches of that shape
  would take.

What stays ambiguous: a slowdown that begins with the first batch of a shape
never run (or fewer than ``HELD_OVER`` batches before it) looks like a healthy
new shape, and the shard learns it as one; it is caught once batches of a shape
known from before run again, within the usual count of them (bench/bench_shapes.py
and tests/exporter/test_tracker_work.py). The price of holding: a healthy shard
whose last ``HELD_OVER`` judged batches both ran five times slow or worse (two
pauses in a row) just before it moves to shapes never run holds a crawl
signature until a shape it knows returns or the worker is relaunched (whose
fresh state judges the new shape by its prediction). bench/bench_regimes.py
measures it on random streams of shapes with pauses: 1 run in 6,000 of 300
batches with 3 % of them paused 2-6x, 1 in 6,000 with 10 %, none without.

VRAM fullness is deliberately not part of this: the exporter and the alert
rules join it on the ``gpu`` label, where the reading actually lives.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import NamedTuple

from crawlguard.kernel.settings import Detection

from .workmodel import GLITCH, Envelope, Shape, genes_shape

PACE_CAP = 2.0
"""The most a batch counts as faster than its prediction (see the module doc)."""
HELD_OVER = 2
"""A batch of an unknown shape counts as the best pace of the last HELD_OVER judged."""
SUSPECT_RATIO = 0.5
"""Below this EMA ratio a crawl may be under way: the model learns from no batch."""


class Verdict(NamedTuple):
    """The state after one batch; what the tracker publishes.

    A NamedTuple rather than a frozen dataclass: one is built per batch and
    the tuple costs a fraction of a frozen dataclass's ``__init__``.
    """

    rate: float
    """Genes/s of this batch."""
    ema: float | None
    """EMA in genes/s: the ratio EMA x the baseline (before the baseline: of genes/s)."""
    baseline: float | None
    """The baseline in genes/s."""
    streak: int
    crawling: bool
    baseline_established: bool
    """True exactly on the batch that completed the baseline (persist it now)."""
    work: float | None = None
    """The batch's work in gene-equivalents: its seconds at the baseline's pace x the
    baseline's genes/s (None before the baseline)."""


class Sample(NamedTuple):
    """One baseline batch, kept to re-derive the baseline pace as the model learns."""

    shape: Shape
    genes: float
    seconds: float


@dataclass
class Baseline:
    """What a shard's healthy pace is; persisted by ``baseline.save_baseline``."""

    genes_per_second: float
    """Median genes/s of the baseline batches (the published baseline)."""
    envelope: Envelope
    samples: list[Sample]
    pace: float = 1.0
    """Median pace of the baseline batches under the current envelope, at most 1."""

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Re-derive the baseline pace after the envelope learnt something."""
        paces = [p / s.seconds for s in self.samples
                 if s.seconds > 0 and (p := self.envelope.predict(s.shape)) is not None]
        median = statistics.median(paces) if paces else 0.0
        self.pace = min(median, 1.0) if median > 0 else 1.0

    def expected_seconds(self, shape: Shape) -> float | None:
        """Seconds a batch of ``shape`` takes at the baseline's pace."""
        predicted = self.envelope.predict(shape)
        return None if predicted is None else predicted / self.pace

    @classmethod
    def from_rate(cls, genes_per_second: float) -> Baseline:
        """A baseline known only as genes/s (a first-release file, ``RateState(baseline=)``)."""
        seconds = 1.0 / genes_per_second
        return cls(genes_per_second, Envelope(work=seconds),
                   [Sample(genes_shape(1.0), 1.0, seconds)])


@dataclass
class RateState:
    detection: Detection
    baseline: Baseline | float | None = None
    """A float is a baseline in genes/s (as a first-release file held it)."""
    envelope: Envelope = field(default_factory=Envelope)
    samples: list[Sample] = field(default_factory=list)
    ratio: float | None = None
    """EMA of pace / baseline pace (the unit-free ratio the rules judge)."""
    genes_ema: float | None = None
    """EMA of genes/s before the baseline exists (there is no pace yet)."""
    streak: int = 0
    batches: int = 0
    learnt: int = 0
    """How often the envelope learnt since the baseline (the tracker saves it again)."""
    judged: list[float] = field(default_factory=list)
    """The paces (over the baseline pace, capped) of the last HELD_OVER batches judged."""

    def __post_init__(self) -> None:
        if isinstance(self.baseline, (int, float)):
            self.baseline = Baseline.from_rate(float(self.baseline))
        if self.baseline is not None:
            self.envelope = self.baseline.envelope

    @property
    def model(self) -> Baseline | None:
        b = self.baseline
        return b if isinstance(b, Baseline) else None

    @property
    def baseline_rate(self) -> float | None:
        """The baseline in genes/s."""
        m = self.model
        return None if m is None else m.genes_per_second

    @property
    def ema(self) -> float | None:
        """The EMA in genes/s (see ``Verdict.ema``)."""
        m = self.model
        if m is None or self.ratio is None:
            return self.genes_ema
        return self.ratio * m.genes_per_second

    @property
    def threshold(self) -> float | None:
        """The EMA (genes/s) below which a batch counts as slow."""
        rate = self.baseline_rate
        return None if rate is None else rate / self.detection.factor

    @property
    def crawling(self) -> bool:
        return self.model is not None and self.streak >= self.detection.window

    def observe(self, genes: float, seconds: float, shape: Shape | None = None,
                expected: float | None = None) -> Verdict:
        """Judge one finished batch; ``shape`` defaults to ``genes`` alone; ``expected``:
        its ``expected_seconds`` if already known (when it began)."""
        if not (math.isfinite(genes) and genes >= 0):
            raise ValueError(f"genes must be a finite number >= 0, got {genes!r}")
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        shape = genes_shape(genes) if shape is None else shape
        self.batches += 1
        # A zero-length batch (coarse timer) would make an infinite rate.
        seconds = max(seconds, 1e-6)
        rate = genes / seconds
        established = False
        work = None
        if self.batches > self.detection.warmup_batches and not shape.empty:
            if self.model is None:
                established = self._sample(shape, genes, seconds, rate)
                work = self.work(shape) if established else None
            else:
                model = self.model
                if expected is None:
                    expected = model.expected_seconds(shape)
                work = None if expected is None else expected * model.genes_per_second
                self._judge(model, shape, seconds, expected)
        elif self.model is not None:
            work = self.work(shape)
        return Verdict(rate, self.ema, self.baseline_rate, self.streak, self.crawling,
                       established, work)

    def _sample(self, shape: Shape, genes: float, seconds: float, rate: float) -> bool:
        """A baseline batch; True when it completed the baseline."""
        alpha = self.detection.ema_alpha
        self.genes_ema = rate if self.genes_ema is None else (
            alpha * rate + (1 - alpha) * self.genes_ema)
        self.envelope.learn(shape, seconds)
        self.samples.append(Sample(shape, genes, seconds))
        if len(self.samples) < self.detection.baseline_batches:
            return False
        rates = [s.genes / s.seconds for s in self.samples if s.genes > 0]
        model = Baseline(statistics.median(rates) if rates else 0.0, self.envelope,
                         list(self.samples))
        if model.genes_per_second <= 0:
            return False  # no genes yet (probes only): keep sampling
        self.baseline = model
        # The EMA starts where the baseline batches leave it (about 1).
        for s in self.samples:
            expected = model.expected_seconds(s.shape)
            if expected is not None:
                self._judged(min(expected / s.seconds, PACE_CAP))
                self._smooth(self.judged[-1])
        return True

    @property
    def held(self) -> float | None:
        """What a batch of an unknown shape counts as: the pace the shard was last judged
        at, the better of its last HELD_OVER batches judged (one slow batch, a pause,
        just before a change of shape is not a crawl)."""
        return max(self.judged) if self.judged else None

    def _judge(self, model: Baseline, shape: Shape, seconds: float,
               expected: float | None) -> None:
        """Judged against what was known before this batch; then learnt from."""
        known = model.envelope.known(shape)
        # With nothing judged yet (a worker relaunched on a persisted baseline), an
        # unknown shape's prediction is all there is.
        pace = self.held if not known and self.judged else (
            None if expected is None else min(expected / seconds, PACE_CAP))
        if pace is not None:
            self._smooth(pace)
            if known or len(self.judged) == 0:
                self._judged(pace)
        if self.ratio is not None and self.ratio < 1.0 / self.detection.factor:
            self.streak += 1
        else:
            self.streak = 0
        if (self.ratio is not None and self.ratio >= SUSPECT_RATIO
                and not (known and expected is not None and expected > GLITCH * seconds)
                and model.envelope.learn(shape, seconds)):
            model.refresh()
            self.learnt += 1

    def _judged(self, pace: float) -> None:
        self.judged.append(pace)
        del self.judged[:-HELD_OVER]

    def _smooth(self, pace: float) -> None:
        alpha = self.detection.ema_alpha
        self.ratio = pace if self.ratio is None else alpha * pace + (1 - alpha) * self.ratio

    def expected_seconds(self, shape: Shape) -> float | None:
        """Seconds a batch of ``shape`` takes at the baseline's pace (None before it)."""
        m = self.model
        return None if m is None else m.expected_seconds(shape)

    def work(self, shape: Shape) -> float | None:
        """A batch's work in gene-equivalents (see ``Verdict.work``)."""
        m = self.model
        expected = None if m is None else m.expected_seconds(shape)
        return None if m is None or expected is None else expected * m.genes_per_second
