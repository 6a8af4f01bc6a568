"""Persisted baselines: one small JSON file per (shard, stage, device).

A corrupt, half-written or hand-edited file is ignored with a warning and the
baseline is measured again: losing a baseline costs a few batches, refusing to
start would cost the rebuild.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from crawlguard.kernel.errors import StateError
from crawlguard.kernel.formats.schema import StateModel, Time, read_file
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.statedir import StateDir, write_json_atomic

log = get_logger(__name__)

Unit = Literal["genes", "tokens"]
"""What a tracker judges throughput in: genes, or non-padding tokens."""


class BaselineRecord(StateModel):
    """The schema of ``shards/<shard>/baseline-<stage>-<device>.json``."""

    baseline: float = Field(gt=0)
    """In the unit the tracker judges (genes/s, or non-padding tokens/s)."""
    unit: Unit = "genes"
    genes_per_unit: float = Field(default=1.0, gt=0)
    """Genes per unit over the baseline batches: baseline x this is genes/s."""
    shard: str = ""
    stage: str = ""
    device: str = ""
    samples: list[float] = Field(default_factory=list)
    established_at: Time = 0.0


def load_baseline_record(state: StateDir, shard: str, stage: str,
                         device: str) -> BaselineRecord | None:
    try:
        return read_file(BaselineRecord, state.baseline_file(shard, stage, device),
                         "a baseline")
    except StateError as exc:
        log.warning("ignoring baseline of %s/%s/%s: %s", shard, stage, device, exc)
        return None


def save_baseline(state: StateDir, shard: str, stage: str, device: str, baseline: float,
                  samples: list[float], now: float | None = None,
                  unit: Unit = "genes",
                  genes_per_unit: float = 1.0) -> None:
    write_json_atomic(state.baseline_file(shard, stage, device), BaselineRecord(
        baseline=baseline, unit=unit, genes_per_unit=genes_per_unit, shard=shard, stage=stage,
        device=device, samples=list(samples),
        established_at=time.time() if now is None else now).model_dump(mode="json"))
