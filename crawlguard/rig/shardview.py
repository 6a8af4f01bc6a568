"""Read-only views of a shard's state for displays: its ladder and its batches.

Defensive on purpose: a live display must not stop the rebuild because a
state file is being replaced or was written by another version; whatever
cannot be read shows as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crawlguard.kernel import rungs
from crawlguard.kernel.errors import StateError
from crawlguard.kernel.formats import batchlog, ladderfile
from crawlguard.kernel.statedir import StateDir


@dataclass(frozen=True)
class LadderView:
    crawls: int = 0
    rung: str = rungs.NONE.name
    env: dict[str, str] = field(default_factory=dict)
    rungs: tuple[Mapping[str, Any], ...] = ()
    """History entries of kind ``rung``, oldest first: a drill's restart is one too."""

    @property
    def rung_names(self) -> list[str]:
        """The rungs the ladder took; a drill's restart (``crawlguard drill``) moved no rung."""
        return [str(e.get("rung", "?")) for e in self.rungs if not is_drill(e)]

    @property
    def drills(self) -> int:
        return sum(1 for e in self.rungs if is_drill(e))


def is_drill(entry: Mapping[str, Any]) -> bool:
    """A rung entry the sidecar took for a drill (its ``source``), not for a crawl."""
    return entry.get("source") == "drill"


def read_ladder(state: StateDir, shard: str) -> LadderView:
    try:
        doc = ladderfile.read(state.ladder_file(shard))
    except StateError:
        return LadderView(rung="?")
    if doc is None:
        return LadderView()
    return LadderView(crawls=doc.crawls, rung=doc.rung, env=dict(doc.env),
                      rungs=tuple(e.model_dump(exclude_none=True) for e in doc.history
                                  if e.kind == "rung"))


@dataclass(frozen=True)
class BatchSummary:
    genes: float
    batches: int
    final_device: str
    wall_seconds: float
    ideal_seconds: float
    """Σ of each batch's time at its baseline's pace (``Batch.healthy_seconds``; genes /
    the device's baseline for lines without work): the time at the shard's own pace."""

    @property
    def lost_seconds(self) -> float:
        """Wall time beyond the shard's own pace: crawling, the work redone after
        a kill, and the restarts themselves. Measured over the whole of
        batches.jsonl, so a state dir resumed after a pause counts the pause."""
        return max(0.0, self.wall_seconds - self.ideal_seconds)


def summarise_batches(state: StateDir, shard: str) -> BatchSummary:
    # The format's one reader: the same lines are accepted and skipped everywhere.
    try:
        rows, _ = batchlog.read(state.batches_file(shard))
    except StateError:
        rows = []
    if not rows:
        return BatchSummary(0.0, 0, "", 0.0, 0.0)
    # Each device's last known baseline; warm-up batches came before it existed.
    baseline = {b.device: b.baseline for b in rows if b.baseline is not None}
    ideal = 0.0
    for b in rows:
        base = baseline.get(b.device)
        healthy = b.healthy_seconds if b.work is not None else None
        ideal += (healthy if healthy is not None
                  else b.genes / base if base else b.seconds)
    return BatchSummary(genes=sum(b.genes for b in rows), batches=len(rows),
                        final_device=rows[-1].device,
                        wall_seconds=rows[-1].t - (rows[0].t - rows[0].seconds),
                        ideal_seconds=ideal)
