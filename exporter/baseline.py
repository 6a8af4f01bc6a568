"""Persisted baselines: one small JSON file per (shard, stage, device).

A corrupt, half-written or hand-edited file is ignored with a warning and the
baseline is measured again: losing a baseline costs a few batches, refusing to
start would cost the rebuild.
"""

from __future__ import annotations

import math
import time
from typing import Any

from crawlguard.errors import StateError
from crawlguard.logs import get_logger
from crawlguard.statedir import StateDir, read_json, write_json_atomic

log = get_logger(__name__)


def load_baseline(state: StateDir, shard: str, stage: str, device: str) -> float | None:
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
    return float(value)


def save_baseline(state: StateDir, shard: str, stage: str, device: str, baseline: float,
                  samples: list[float], now: float | None = None) -> None:
    write_json_atomic(state.baseline_file(shard, stage, device), {
        "shard": shard, "stage": stage, "device": device, "baseline": baseline,
        "samples": samples, "established_at": time.time() if now is None else now,
    })
