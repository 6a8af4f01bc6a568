"""Persisted baselines: one small JSON file per (shard, stage, device).

    {"shard", "stage", "device", "baseline": <genes/s>, "samples": [<genes/s>, ...],
     "established_at", "unit": "genes" | "tokens", "model": 2,
     "envelope": [[a...], [b...], [c...]],
     "batches": [[rows, tokens, quad, genes, seconds], ...]}

``envelope`` and ``batches`` are the work model (``workmodel.Envelope``) and
the baseline batches it re-derives the baseline pace from; the tracker saves
the file again when the envelope has learnt since (at most once a minute).
A file of the first release (no ``model`` key) holds a genes/s baseline only:
one in genes is read as that rate; one in tokens, a unit this release measures
differently, is measured again.

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

from .rate import Baseline, Sample
from .workmodel import Envelope, Shape, positive

log = get_logger(__name__)

MODEL_VERSION = 2
UNITS = ("genes", "tokens")


class BaselineRecord(NamedTuple):
    model: Baseline
    unit: str
    """``tokens`` when the batches carried an attention mask, else ``genes``."""


def load_baseline_record(state: StateDir, shard: str, stage: str,
                         device: str) -> BaselineRecord | None:
    path = state.baseline_file(shard, stage, device)
    where = f"{shard}/{stage}/{device}"
    try:
        data: Any = read_json(path)
    except StateError as exc:
        log.warning("ignoring baseline of %s: %s", where, exc)
        return None
    if data is None:
        return None
    value = data.get("baseline") if isinstance(data, dict) else None
    if not positive(value):
        log.warning("ignoring baseline of %s: %s holds no positive 'baseline'", where, path)
        return None
    unit = data.get("unit", "genes")
    if unit not in UNITS:
        log.warning("ignoring baseline of %s: %s has an unknown unit", where, path)
        return None
    if "model" not in data:
        if unit != "genes":
            log.info("measuring the baseline of %s again: %s was judged in another unit",
                     where, path)
            return None
        return BaselineRecord(Baseline.from_rate(float(value)), unit)
    try:
        if data["model"] != MODEL_VERSION:
            raise ValueError(f"model version {data['model']!r}")
        envelope = Envelope.from_json(data.get("envelope"))
        samples = [_sample(row) for row in data.get("batches") or []]
    except (ValueError, TypeError) as exc:
        log.warning("ignoring baseline of %s: %s has a bad work model (%s)", where, path, exc)
        return None
    return BaselineRecord(Baseline(float(value), envelope, samples), unit)


def save_baseline(state: StateDir, shard: str, stage: str, device: str, model: Baseline,
                  unit: str, now: float | None = None) -> None:
    write_json_atomic(state.baseline_file(shard, stage, device), {
        "shard": shard, "stage": stage, "device": device,
        "baseline": model.genes_per_second,
        "samples": [s.genes / s.seconds for s in model.samples if s.seconds > 0],
        "established_at": time.time() if now is None else now, "unit": unit,
        "model": MODEL_VERSION, "envelope": model.envelope.to_json(),
        "batches": [[*s.shape, s.genes, s.seconds] for s in model.samples],
    })


def _sample(row: Any) -> Sample:
    if (not isinstance(row, list) or len(row) != 5
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) and v >= 0 for v in row) or row[4] <= 0):
        raise ValueError("batches must be [rows, tokens, quad, genes, seconds] rows")
    rows, tokens, quad, genes, seconds = (float(v) for v in row)
    return Sample(Shape(rows, tokens, quad), genes, seconds)
