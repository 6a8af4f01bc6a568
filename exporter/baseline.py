"""Persisted baselines: one small JSON file per (shard, stage, device).

A corrupt, half-written or hand-edited file is ignored with a warning and the
baseline is measured again: losing a baseline costs a few batches, refusing to
start would cost the rebuild.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Literal

from crawlguard.kernel.errors import StateError
from crawlguard.kernel.formats import schema
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.statedir import StateDir, write_json_atomic

log = get_logger(__name__)

Unit = Literal["genes", "tokens"]
"""What a tracker judges throughput in: genes, or non-padding tokens."""


@dataclass(frozen=True)
class BaselineRecord:
    """The schema of ``shards/<shard>/baseline-<stage>-<device>.json``."""

    baseline: float
    """In the unit the tracker judges (genes/s, or non-padding tokens/s)."""
    unit: Unit = "genes"
    genes_per_unit: float = 1.0
    """Genes per unit over the baseline batches: baseline x this is genes/s."""
    shard: str = ""
    stage: str = ""
    device: str = ""
    samples: tuple[float, ...] = ()
    established_at: float = 0.0

    def __post_init__(self) -> None:
        if self.baseline <= 0:
            raise ValueError(f"baseline must be > 0, got {self.baseline!r}")
        if self.genes_per_unit <= 0:
            raise ValueError(f"genes_per_unit must be > 0, got {self.genes_per_unit!r}")


def load_baseline_record(state: StateDir, shard: str, stage: str,
                         device: str) -> BaselineRecord | None:
    try:
        return schema.read_file(state.baseline_file(shard, stage, device), BaselineRecord,
                                "the baseline")
    except StateError as exc:
        log.warning("ignoring baseline of %s/%s/%s: %s", shard, stage, device, exc)
        return None


def save_baseline(state: StateDir, shard: str, stage: str, device: str, baseline: float,
                  samples: list[float], now: float | None = None,
                  unit: Unit = "genes",
                  genes_per_unit: float = 1.0) -> None:
    write_json_atomic(state.baseline_file(shard, stage, device), asdict(BaselineRecord(
        baseline=baseline, unit=unit, genes_per_unit=genes_per_unit, shard=shard, stage=stage,
        device=device, samples=tuple(samples),
        established_at=time.time() if now is None else now)))
