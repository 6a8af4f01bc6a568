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
  ``b`` and ``c`` from above; ``B`` and ``C`` are the ROBUST-th smallest of them.
  A crawl makes batches slower, never faster, so it cannot move them;
- the **reference** is the batch with the ROBUST-th smallest time, learnt only
  while the shard looks healthy (the rate state's ``healthy`` flag: a small
  batch crawling can still be fast in absolute terms). Its time less the most
  its tokens and attention can cost, ``T - B x tokens - C x quad``, is the least
  the fixed cost ``a`` can be.

The prediction is that fixed-cost bound plus the larger per-unit term,

    predicted = max(T - B x tokens_ref - C x quad_ref, 0) + max(B x tokens, C x quad)

exact for the batches the bounds come from, and lenient in between (the larger
of two terms instead of their sum, with coefficients that are upper bounds). A
batch far smaller than the reference (under REACH of its tokens), where that
is less than LEAP x the reference's time, is predicted at LEAP x the reference's
time instead: its fixed cost is unknown until a batch that small has run, and a
title after normal files costs nearly a whole forward, not its tokens' share.
That guess (``leap``) is an extrapolation, not evidence: while the EMA is low the
rate state neither judges nor learns from such a batch.

- Measured on real encodes (bench/README.md): healthy corpus shapes stay at
  0.76 or more of their baseline pace; a property test holds any healthy mix
  above the crawl threshold for any costs ``a, b, c``.
- A shape the shard has not run yet is predicted from the others, leniently
  (a long batch after tiny ones at the per-token bound of the tiny ones, which
  carries their fixed cost); after ROBUST batches of it, from its own cost. A
  crawl that begins exactly where the batches leap to a never-seen shape is
  therefore judged leniently until shapes the shard knows come again.
- Each bound is the ROBUST-th smallest value, so one or two batches timed wrong
  (a clock step, a forward that did nothing) cannot drag it down.

Batches without an attention mask have no tokens: their shape is ``genes``
alone (``quad`` 0), and the model is the fixed-cost bound plus ``B x genes``.
Standard library only.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, NamedTuple

ROBUST = 3
"""Each bound is the ROBUST-th smallest value seen (the largest seen while fewer)."""
REACH = 0.4
"""A batch with at least REACH x the tokens of the reference batch (the fastest learnt)
is predicted from the bounds; a smaller one may be the LEAP guess."""
LEAP = 0.3
"""The guess for a batch far smaller than the reference: LEAP x its time (the fixed
cost of a forward is unknown until a batch that small has been seen)."""


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

    def features(self) -> tuple[float, float, float]:
        return (1.0, self.tokens, self.quad)


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
    """The bounds the work model predicts from, learnt from the judged batches.

    ``fixed``: the ROBUST fastest batches as (seconds, tokens, quad), learnt only while
    the shard looks healthy (a small batch crawling can be fast in absolute terms);
    ``work`` and ``quad``: the ROBUST smallest seconds per unit of ``Shape.tokens`` and
    of ``Shape.quad``, learnt from every judged batch (a crawl never lowers them).
    """

    def __init__(self, fixed: Sequence[Sequence[float]] = (),
                 work: Sequence[float] = (), quad: Sequence[float] = ()) -> None:
        self.fixed: list[tuple[float, float, float]] = []
        self.work: list[float] = []
        self.quad: list[float] = []
        for seconds, tokens, q in fixed:
            _keep(self.fixed, (float(seconds), float(tokens), float(q)))
        for v in work:
            _keep(self.work, float(v))
        for v in quad:
            _keep(self.quad, float(v))

    def learn(self, shape: Shape, seconds: float, healthy: bool = True) -> bool:
        """Take the batch's time into the bounds; True when one of them moved."""
        changed = healthy and _keep(self.fixed, (seconds, shape.tokens, shape.quad))
        if shape.tokens > 0:
            changed |= _keep(self.work, seconds / shape.tokens)
        if shape.quad > 0:
            changed |= _keep(self.quad, seconds / shape.quad)
        return changed

    def _terms(self, shape: Shape) -> tuple[float | None, bool]:
        """The prediction (see the module doc), and whether it is the LEAP guess."""
        work = self.work[-1] * shape.tokens if self.work and shape.tokens > 0 else None
        quad = self.quad[-1] * shape.quad if self.quad and shape.quad > 0 else None
        best = max((t for t in (work, quad) if t is not None), default=None)
        if not self.fixed:
            return best, False
        seconds, tokens, q = self.fixed[-1]
        # The reference batch's time less the most its tokens and attention can cost:
        # the least the fixed cost of a forward can be.
        fixed = seconds - (self.work[-1] * tokens if self.work else 0.0) - (
            self.quad[-1] * q if self.quad else 0.0)
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


def _keep(low: list[Any], value: Any) -> bool:
    """Keep ``value`` among the ROBUST smallest of ``low`` (sorted); True when it was."""
    if len(low) >= ROBUST and value >= low[-1]:
        return False
    bisect.insort(low, value)
    del low[ROBUST:]
    return True
