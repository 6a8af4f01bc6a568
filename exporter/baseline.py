"""Persisted baselines: one small JSON file per (shard, stage, device).

A corrupt, half-written or hand-edited file is ignored with a warning and the
baseline is measured again: losing a baseline costs a few batches, refusing to
start would cost the rebuild.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

from crawlguard.kernel.errors import StateError
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.statedir import StateDir, read_json, write_json_atomic

log = get_logger(__name__)


class BaselineRecord(NamedTuple):
    value: float
    """In the unit the tracker judges (genes/s, or non-padding tokens/s)."""
    unit: str
    genes_per_unit: float
    """Genes per unit over the baseline batches: value x this is genes/s."""


def load_baseline(state: StateDir, shard: str, stage: str, device: str) -> float | None:
    record = load_baseline_record(state, shard, stage, device)
    return None if record is None else record.value


def load_baseline_record(state: StateDir, shard: str, stage: str,
                         device: str) -> BaselineRecord | None:
    path = state.baseline_file(shard, stage, device)
    try:
        data: Any = read_json(path)
    except StateError as exc:
        log.warning("ignoring baseline of %s/%s/%s: %s", shard, stage, device, exc)
        return None
    if data is None:
        return None
    value = data.get("baseline") if isinstance(data, dict) else None
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not math.isfinite(value) or value <= 0):
        log.warning("ignoring baseline of %s/%s/%s: %s holds no positive 'baseline'",
                    shard, stage, device, path)
        return None
    unit = data.get("unit", "genes")
    scale = data.get("genes_per_unit", 1.0)
    if (unit not in ("genes", "tokens") or not isinstance(scale, (int, float))
            or isinstance(scale, bool) or not math.isfinite(scale) or scale <= 0):
        log.warning("ignoring baseline of %s/%s/%s: %s has a bad unit or genes_per_unit",
                    shard, stage, device, path)
        return None
    return BaselineRecord(float(value), str(unit), float(scale))


def save_baseline(state: StateDir, shard: str, stage: str, device: str, baseline: float,
                  samples: list[float], now: float | None = None, unit: str = "genes",
                  genes_per_unit: float = 1.0) -> None:
    write_json_atomic(state.baseline_file(shard, stage, device), {
        "shard": shard, "stage": stage, "device": device, "baseline": baseline,
        "samples": samples, "established_at": time.time() if now is None else now,
        "unit": unit, "genes_per_unit": genes_per_unit,
    })
