"""Read-only views of a shard's state for displays: its ladder and its batches.

Defensive on purpose: a live display must not stop the rebuild because a
state file is being replaced or was written by another version; whatever
cannot be read shows as unknown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from exporter.errors import StateError
from exporter.statedir import StateDir, read_json


@dataclass(frozen=True)
class LadderView:
    crawls: int = 0
    rung: str = "none"
    env: dict[str, str] = field(default_factory=dict)
    rungs: tuple[dict[str, Any], ...] = ()
    """History entries of kind ``rung``, oldest first."""

    @property
    def rung_names(self) -> list[str]:
        return [str(e.get("rung", "?")) for e in self.rungs]


def read_ladder(state: StateDir, shard: str) -> LadderView:
    try:
        data = read_json(state.ladder_file(shard))
    except StateError:
        return LadderView(rung="?")
    if not isinstance(data, dict):
        return LadderView()
    history = data.get("history")
    rungs = tuple(e for e in history if isinstance(e, dict) and e.get("kind") == "rung") \
        if isinstance(history, list) else ()
    env = data.get("env")
    crawls = data.get("crawls")
    return LadderView(crawls=crawls if isinstance(crawls, int) else 0,
                      rung=str(data.get("rung", "none")),
                      env={str(k): str(v) for k, v in env.items()} if isinstance(env, dict)
                      else {}, rungs=rungs)


@dataclass(frozen=True)
class BatchSummary:
    genes: float
    batches: int
    final_device: str
    wall_seconds: float
    ideal_seconds: float
    """Σ genes / baseline of the batch's device: the time at the shard's own pace."""

    @property
    def lost_seconds(self) -> float:
        """Wall time beyond the shard's own pace: crawling, the work redone after
        a kill, and the restarts themselves. Measured over the whole of
        batches.jsonl, so a state dir resumed after a pause counts the pause."""
        return max(0.0, self.wall_seconds - self.ideal_seconds)


def summarise_batches(state: StateDir, shard: str) -> BatchSummary:
    rows: list[dict[str, Any]] = []
    try:
        with open(state.batches_file(shard), encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except OSError:
        return BatchSummary(0.0, 0, "", 0.0, 0.0)
    if not rows:
        return BatchSummary(0.0, 0, "", 0.0, 0.0)
    # Each device's last known baseline; warm-up batches came before it existed.
    baseline: dict[str, float] = {}
    for row in rows:
        if isinstance(row.get("baseline"), (int, float)) and row["baseline"] > 0:
            baseline[str(row.get("device"))] = float(row["baseline"])
    ideal = 0.0
    for row in rows:
        base = baseline.get(str(row.get("device")))
        ideal += float(row.get("genes", 0)) / base if base else float(row.get("seconds", 0))
    first = float(rows[0].get("t", 0)) - float(rows[0].get("seconds", 0))
    return BatchSummary(genes=sum(float(r.get("genes", 0)) for r in rows), batches=len(rows),
                        final_device=str(rows[-1].get("device", "")),
                        wall_seconds=float(rows[-1].get("t", 0)) - first, ideal_seconds=ideal)
