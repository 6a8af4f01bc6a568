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
on them extrapolates badly to shapes they did not contain. Each coefficient
is instead **bounded from below by the batches themselves**: every batch costs
at least ``a`` (so ``a <= t``), at least ``b x rows x longest`` and at least
``c x rows x longest^2``; so ``t``, ``t / (rows x longest)`` and
``t / (rows x longest^2)`` of every batch bound a, b and c from above, and
their minima over the shard's batches are the tightest such bounds. The
prediction is the largest of the three terms with those minima:

    predicted = max(A, B x rows x longest, C x rows x longest^2)

- It never predicts less than a third of what a healthy batch of any shape
  costs (the max of three non-negative terms is at least a third of their
  sum), so a healthy batch never runs below a third of its prediction: far
  from the crawl threshold of 1/5.
- A crawl makes batches slower, never faster, so it cannot move a minimum: a
  crawling shard never teaches the model that crawling is normal.
- A shape the shard has not run yet is predicted from the others, leniently
  (a tiny batch after long ones is predicted at the smallest batch seen, a
  long one after tiny ones at the cheapest per-token rate seen); after
  ``ROBUST`` batches of it, it is predicted from its own cost. A crawl that
  begins exactly when a never-seen shape begins is therefore judged leniently
  until the shard returns to shapes it knows.
- Each minimum is the ``ROBUST``-th smallest value, so one or two batches timed
  wrong (a clock step, a forward that did nothing) cannot drag it down.

Batches without an attention mask have no tokens: their shape is ``genes``
alone, and the model is ``max(A, B x genes)``. Standard library only.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeGuard

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
        """The largest of the three terms, and whether it is the LEAP guess."""
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

    def to_json(self) -> dict[str, Any]:
        return {"fixed": [list(p) for p in self.fixed], "work": list(self.work),
                "quad": list(self.quad)}

    @classmethod
    def from_json(cls, data: Any) -> Envelope:
        """The envelope of a persisted baseline; ``ValueError`` when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("envelope must be an object")
        fixed, work, quad = data.get("fixed"), data.get("work"), data.get("quad")
        for values in (fixed, work, quad):
            if not isinstance(values, list) or len(values) > ROBUST:
                raise ValueError(f"envelope terms must be lists of at most {ROBUST}")
        if not all(positive(v) for v in (*work, *quad)):  # type: ignore[misc]
            raise ValueError("envelope bounds must be positive numbers")
        if not all(isinstance(p, list) and len(p) == 3 and positive(p[0])
                   and all(positive(v) or v == 0 for v in p[1:])
                   for p in fixed):  # type: ignore[union-attr]
            raise ValueError("envelope fixed entries must be [seconds, tokens, quad]")
        return cls(fixed, work, quad)  # type: ignore[arg-type]


def _keep(low: list[Any], value: Any) -> bool:
    """Keep ``value`` among the ROBUST smallest of ``low`` (sorted); True when it was."""
    if len(low) >= ROBUST and value >= low[-1]:
        return False
    bisect.insort(low, value)
    del low[ROBUST:]
    return True


def positive(value: object) -> TypeGuard[float]:
    """A finite number > 0 (and no bool)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)
