"""Persisted baselines: one small JSON file per (shard, stage, device).

    {"shard", "stage", "device", "baseline": <genes/s>, "samples": [<genes/s>, ...],
     "established_at", "unit": "genes" | "tokens", "model": 2,
     "envelope": {"fixed": [seconds, tokens, quad], "work": <s/token>, "quad": <s/quad>,
                  "seen": [[tokens, quad], ...]},
     "batches": [[rows, tokens, quad, genes, seconds], ...]}

``envelope`` and ``batches`` are the work model (``workmodel.Envelope``) and
the baseline batches it re-derives the baseline pace from; the tracker saves
the file again when the envelope has learnt since (at most once a minute).
``model`` is the version of the work model. A file of the first release (no
``model`` key) holds a genes/s baseline only: one in genes is read as that
rate; one in tokens, a unit this release measures differently, is measured
again.

A corrupt, half-written or hand-edited file is ignored with a warning and the
baseline is measured again: losing a baseline costs a few batches, refusing to
start would cost the rebuild.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import Field, model_validator

from crawlguard.kernel.errors import StateError
from crawlguard.kernel.formats.schema import StateModel, Time, read_file
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.statedir import StateDir, write_json_atomic

from .rate import Baseline, Sample
from .workmodel import MAX_SEEN, Envelope, Shape

log = get_logger(__name__)

MODEL_VERSION: Literal[2] = 2
"""The work model's version; a file of a later one is measured again."""
Unit = Literal["genes", "tokens"]
"""What a tracker's batch shapes are made of: padded tokens (from the mask), or genes."""

# Bounded so that nothing the model computes from a hand-edited file overflows: no
# batch is 10^15 tokens, and the tracker never times a batch under a microsecond.
Amount = Annotated[float, Field(ge=0, le=1e15)]
Seconds = Annotated[float, Field(ge=1e-6, le=1e9)]
PerUnit = Annotated[float, Field(gt=0, le=1e9)]
FixedPoint = Annotated[list[Amount], Field(min_length=3, max_length=3)]
"""[seconds, tokens, quad] of the fastest batch (seconds at least 1 us)."""
Landmark = Annotated[list[Amount], Field(min_length=2, max_length=2)]
"""[tokens, quad] of a shape learnt."""
BatchRow = Annotated[list[Amount], Field(min_length=5, max_length=5)]
"""[rows, tokens, quad, genes, seconds] of one baseline batch (seconds at least 1 us)."""


class EnvelopeRecord(StateModel):
    """``workmodel.Envelope`` as the baseline file holds it."""

    fixed: FixedPoint | None = None
    work: PerUnit | None = None
    quad: PerUnit | None = None
    seen: list[Landmark] = Field(default_factory=list, max_length=MAX_SEEN)

    @model_validator(mode="after")
    def _timed(self) -> EnvelopeRecord:
        if self.fixed is not None and self.fixed[0] < 1e-6:
            raise ValueError("the fixed point's seconds must be at least 1e-06")
        return self

    @classmethod
    def of(cls, envelope: Envelope) -> EnvelopeRecord:
        return cls(fixed=None if envelope.fixed is None else list(envelope.fixed),
                   work=envelope.work, quad=envelope.quad,
                   seen=[list(point) for point in envelope.seen])

    def envelope(self) -> Envelope:
        return Envelope(self.fixed, self.work, self.quad, self.seen)


class BaselineRecord(StateModel):
    """The schema of ``shards/<shard>/baseline-<stage>-<device>.json``."""

    baseline: float = Field(gt=0)
    """Genes/s: the median of the baseline batches'."""
    unit: Unit = "genes"
    model: Literal[2] | None = None
    """The work model's version (``MODEL_VERSION``); absent in a first-release file."""
    envelope: EnvelopeRecord | None = None
    batches: list[BatchRow] = Field(default_factory=list)
    shard: str = ""
    stage: str = ""
    device: str = ""
    samples: list[float] = Field(default_factory=list)
    established_at: Time = 0.0

    @model_validator(mode="after")
    def _complete(self) -> BaselineRecord:
        if self.model is not None and self.envelope is None:
            raise ValueError(f"a work model of version {self.model} needs its envelope")
        if any(row[4] < 1e-6 for row in self.batches):
            raise ValueError("a batch's seconds must be at least 1e-06")
        return self

    @classmethod
    def of(cls, model: Baseline, unit: Unit, *, shard: str, stage: str, device: str,
           now: float) -> BaselineRecord:
        return cls(baseline=model.genes_per_second, unit=unit, model=MODEL_VERSION,
                   envelope=EnvelopeRecord.of(model.envelope),
                   batches=[[*s.shape, s.genes, s.seconds] for s in model.samples],
                   shard=shard, stage=stage, device=device,
                   samples=[s.genes / s.seconds for s in model.samples if s.seconds > 0],
                   established_at=now)

    def work_model(self) -> Baseline | None:
        """The baseline to judge by; None for a first-release file in tokens (a unit
        this release measures differently: measured again)."""
        if self.envelope is None:
            return None if self.unit != "genes" else Baseline.from_rate(self.baseline)
        samples = [Sample(Shape(rows, tokens, quad), genes, seconds)
                   for rows, tokens, quad, genes, seconds in self.batches]
        return Baseline(self.baseline, self.envelope.envelope(), samples)


def load_baseline_record(state: StateDir, shard: str, stage: str,
                         device: str) -> BaselineRecord | None:
    try:
        return read_file(BaselineRecord, state.baseline_file(shard, stage, device),
                         "a baseline")
    except StateError as exc:
        log.warning("ignoring baseline of %s/%s/%s: %s", shard, stage, device, exc)
        return None


def save_baseline(state: StateDir, shard: str, stage: str, device: str, model: Baseline,
                  unit: Unit, now: float | None = None) -> None:
    write_json_atomic(state.baseline_file(shard, stage, device), BaselineRecord.of(
        model, unit, shard=shard, stage=stage, device=device,
        now=time.time() if now is None else now).model_dump(mode="json"))
