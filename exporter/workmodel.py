"""What a batch should cost: the work model the rate and the stall rule judge.

A forward pass of a transformer over ``rows`` texts padded to ``longest``
tokens costs about

    a  +  b x rows x longest  +  c x rows x longest^2

seconds: a fixed cost per forward (kernel launches, Python, the copy of the
output), the linear layers per padded token, and attention per padded token
and position. Which of the three dominates depends on the batch: a one-text
encode is almost all ``a``, a batch of chat lines mostly ``b``, a batch of
2,000-token pages ``c`` (on the CPU test model attention costs 2.4 times what
its FLOPs say, so not even the ratio c/b is known in advance).

Five baseline batches cannot fit three coefficients, and a regression fitted
on them extrapolates badly to shapes they did not contain (on the traces of
bench/bench_shapes.py it predicted long documents after tiny items five times
too fast: a false crawl). The model is built from bounds the batches
themselves give instead:

- every batch costs at least ``b x rows x longest`` and ``c x rows x longest^2``,
  so ``t / (rows x longest)`` and ``t / (rows x longest^2)`` of every batch bound
  ``b`` and ``c`` from above; ``B`` and ``C`` are the smallest of them;
- the **reference** is the fastest batch. Its time less the most its tokens and
  attention can cost, ``T - B x tokens - C x quad``, is the least the fixed cost
  ``a`` can be.

The prediction is that fixed-cost bound plus the larger per-unit term,

    predicted = max(T - B x tokens_ref - C x quad_ref, 0) + max(B x tokens, C x quad)

exact for the batches the bounds come from, and lenient in between (the larger
of two terms instead of their sum, with coefficients that are upper bounds). A
batch far smaller than the reference (under REACH of its tokens), where that
is less than LEAP x the reference's time, is predicted at LEAP x the reference's
time instead: its fixed cost is unknown until a batch that small has been seen,
and a title after normal files costs nearly a whole forward, not its tokens'
share. That guess (``leap``) is for the batch's work (the stall limit, the ETA),
never evidence of its pace.

**Known shapes.** The envelope also keeps a landmark (padded tokens, attention
term) of each shape it learnt. A batch within NEAR x of a landmark in both is
of a *known* shape: the bounds include its own kind's time, so its prediction is
that kind's cost (on the traces of bench/bench_shapes.py, healthy known batches
run at 0.6 to 1.5 of their prediction). Any other batch (a long document after
tiny items, 20x over-predicted from their attention bound; the shrinking tail of a
length-sorted call; a title after pages, the LEAP guess) is predicted by
extrapolating from other shapes, which can be off by a factor of ten or more
either way: the rate state does not take it as evidence (``rate.RateState``).

What the rate state learns: only batches run while the shard looks healthy, so
a crawl never teaches the model its pace for a shape met during it. The bounds
are minima, not a robust order statistic: a crawl makes batches slower, never
faster, so once a shape was run healthy (even once) a crawl cannot lower them,
and a slow batch of that shape is judged slow (the ROBUST-th smallest of an
earlier version let two crawling batches of a shape run healthy only once
become its bound). A batch timed too fast (a wall-clock step, a forward that did
nothing) would lower a minimum for good: a batch of a known shape more than
GLITCH x faster than predicted is therefore not learnt from. One of a shape
never run cannot be told from a fast healthy one and is learnt.

Batches without an attention mask have no tokens: their shape is ``genes``
alone (``quad`` 0), and the model is the fixed-cost bound plus ``B x genes``.
Standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

REACH = 0.4
"""A batch with at least REACH x the tokens of the reference batch (the fastest learnt)
is predicted from the bounds; a smaller one may be the LEAP guess."""
LEAP = 0.3
"""The guess for a batch far smaller than the reference: LEAP x its time (the fixed
cost of a forward is unknown until a batch that small has been seen)."""
NEAR = 2.0
"""A batch within NEAR x the padded tokens and the attention term of a shape the model
learnt is of a known shape: its prediction rests on its own kind's time."""
SAME = 1.25
"""Shapes within SAME x of one another are one landmark."""
MAX_SEEN = 64
"""Landmarks kept; the least recently met is forgotten first (met again, it is learnt
again as a new shape)."""
GLITCH = 4.0
"""A batch of a known shape more than GLITCH x faster than predicted is not learnt from:
a batch timed wrong (a wall-clock step, a forward that did nothing), not a pace."""


class Shape(NamedTuple):
    """What a batch's cost depends on: the feature of each term of the model."""

    rows: float
    """Genes (texts) in the batch."""
    tokens: float
    """Padded tokens (rows x longest); without a mask: the genes, or the tokens given."""
    quad: float
    """rows x longest^2, the attention term; 0 when the lengths are unknown."""

    @property
    def empty(self) -> bool:
        """A batch with nothing in it (no genes, no tokens) is not judged."""
        return self.rows <= 0 and self.tokens <= 0


def genes_shape(genes: float) -> Shape:
    """The shape of a batch the build counts in genes only."""
    return Shape(float(genes), float(genes), 0.0)


def padded_shape(rows: int, longest: int) -> Shape:
    """The shape of a padded batch: ``rows`` texts, ``longest`` tokens each (padding in)."""
    return Shape(float(rows), float(rows * longest), float(rows * longest * longest))


def tokens_shape(genes: float, tokens: float) -> Shape:
    """A batch of ``genes`` texts and ``tokens`` non-padding tokens, lengths unknown:
    as if each text had the mean length (the least its attention can cost)."""
    genes, tokens = float(genes), float(tokens)
    quad = tokens * tokens / genes if genes > 0 else 0.0
    return Shape(genes, tokens, quad)


class Envelope:
    """The bounds the work model predicts from, and the shapes they were learnt on.

    ``fixed``: the fastest batch learnt, as (seconds, tokens, quad); ``work`` and
    ``quad``: the least seconds per unit of ``Shape.tokens`` and of ``Shape.quad``;
    ``seen``: the landmarks, one (tokens, quad) per shape learnt (within SAME x), the
    most recently met last. Only what the rate state learns from (the shard looking
    healthy) goes in.
    """

    def __init__(self, fixed: Sequence[float] | None = None, work: float | None = None,
                 quad: float | None = None, seen: Sequence[Sequence[float]] = ()) -> None:
        self.fixed: tuple[float, float, float] | None = None
        if fixed is not None:
            seconds, tokens, q = fixed
            self.fixed = (float(seconds), float(tokens), float(q))
        self.work = None if work is None else float(work)
        self.quad = None if quad is None else float(quad)
        self.seen: list[tuple[float, float]] = []
        # Per landmark, the tokens and quad ranges of NEAR and of SAME (a batch is
        # judged against them every time: comparisons only).
        self._ranges: list[tuple[float, ...]] = []
        for t, q in seen[-MAX_SEEN:]:
            self._add(float(t), float(q))

    def _add(self, tokens: float, quad: float) -> None:
        self.seen.append((tokens, quad))
        self._ranges.append(tuple(v for r in (NEAR, SAME)
                                  for v in (tokens / r, tokens * r, quad / r, quad * r)))
        if len(self.seen) > MAX_SEEN:
            del self.seen[0], self._ranges[0]

    def _landmark(self, shape: Shape, same: bool = False) -> int | None:
        """The index of the most recent landmark within NEAR x (SAME x) of ``shape``."""
        tokens, quad = shape.tokens, shape.quad
        k = 4 if same else 0
        ranges = self._ranges
        for i in range(len(ranges) - 1, -1, -1):
            r = ranges[i]
            if r[k] <= tokens <= r[k + 1] and r[k + 2] <= quad <= r[k + 3]:
                return i
        return None

    def known(self, shape: Shape) -> bool:
        """Whether the batch is of a shape learnt (within NEAR x of a landmark), so its
        prediction rests on its own kind's time, not on an extrapolation from others'
        (nor on the LEAP guess)."""
        return self._landmark(shape) is not None and not self.leap(shape)

    def learn(self, shape: Shape, seconds: float) -> bool:
        """Take a batch the shard ran healthy into the bounds and the landmarks; True
        when the model changed."""
        changed = False
        if self.fixed is None or seconds < self.fixed[0]:
            self.fixed, changed = (seconds, shape.tokens, shape.quad), True
        if shape.tokens > 0 and (self.work is None or seconds / shape.tokens < self.work):
            self.work, changed = seconds / shape.tokens, True
        if shape.quad > 0 and (self.quad is None or seconds / shape.quad < self.quad):
            self.quad, changed = seconds / shape.quad, True
        i = self._landmark(shape, same=True)
        if i is None:
            self._add(shape.tokens, shape.quad)
            changed = True
        elif i != len(self.seen) - 1:  # met again: the most recent
            self.seen.append(self.seen.pop(i))
            self._ranges.append(self._ranges.pop(i))
        return changed

    def _terms(self, shape: Shape) -> tuple[float | None, bool]:
        """The prediction (see the module doc), and whether it is the LEAP guess."""
        work = self.work * shape.tokens if self.work is not None and shape.tokens > 0 else None
        quad = self.quad * shape.quad if self.quad is not None and shape.quad > 0 else None
        best = max((t for t in (work, quad) if t is not None), default=None)
        if self.fixed is None:
            return best, False
        seconds, tokens, q = self.fixed
        # The reference batch's time less the most its tokens and attention can cost:
        # the least the fixed cost of a forward can be.
        fixed = seconds - (self.work * tokens if self.work is not None else 0.0) - (
            self.quad * q if self.quad is not None else 0.0)
        known = max(fixed, 0.0) + (best or 0.0)
        if shape.tokens >= REACH * tokens or known >= LEAP * seconds:
            return known, False
        return LEAP * seconds, True

    def leap(self, shape: Shape) -> bool:
        """Whether the batch's prediction is the LEAP guess: far smaller than the batches
        learnt, it may cost anything between its tokens' share and their fixed cost."""
        return self._terms(shape)[1]

    def predict(self, shape: Shape) -> float | None:
        """Seconds the batch costs at the pace of the batches learnt (see the module doc)."""
        value = self._terms(shape)[0]
        return value if value is None or value > 0 else None
