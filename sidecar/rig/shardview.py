"""Read-only views of a shard's state for displays: its ladder and its batches.

Defensive on purpose: a live display must not stop the rebuild because a
state file is being replaced or was written by another version; whatever
cannot be read shows as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crawlguard.errors import StateError
from crawlguard.statedir import StateDir, read_json

from ..report.evidence import iter_jsonl, parse_batch


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
    # The report's reader: the same lines are accepted and skipped everywhere.
    try:
        rows = [b for b in (None if obj is None else parse_batch(obj)
                            for obj in iter_jsonl(state.batches_file(shard))) if b is not None]
    except StateError:
        rows = []
    if not rows:
        return BatchSummary(0.0, 0, "", 0.0, 0.0)
    # Each device's last known baseline; warm-up batches came before it existed.
    baseline = {b.device: b.baseline for b in rows if b.baseline is not None}
    ideal = 0.0
    for b in rows:
        base = baseline.get(b.device)
        ideal += b.genes / base if base else b.seconds
    return BatchSummary(genes=sum(b.genes for b in rows), batches=len(rows),
                        final_device=rows[-1].device,
                        wall_seconds=rows[-1].t - (rows[0].t - rows[0].seconds),
                        ideal_seconds=ideal)
