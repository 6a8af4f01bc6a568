"""Which worker processes the exporter is serving, and the label sets each writes.

A worker's live-gauge file is named after its identity (``<pid>-<creation
ms>``, see ``mpfiles``) and holds the series of every tracker it created, each
with the worker labels (shard, stage, device, gpu). Per-process evidence read
outside the worker (its shared GPU memory) is published under those labels.
Read after ``WorkerCollector`` pruned the files of dead workers.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from crawlguard.kernel.workers import WorkerIdentity

from . import catalog, mpfiles

Labels = tuple[str, str, str, str]
"""Values of ``catalog.WORKER_LABELS``, in that order."""


@dataclass(frozen=True)
class LiveWorker:
    identity: WorkerIdentity
    labels: tuple[Labels, ...]


_SEEN: dict[str, tuple[int, tuple[Labels, ...]]] = {}
"""path -> (bytes used, label sets) at the last read. A file's label sets change
only when a series is added, which grows its used size (``mpfiles.used_bytes``):
a scrape re-reads only such files, not every file at every batch."""


def live_workers(metrics_dir: Path) -> list[LiveWorker]:
    """Workers with a live-gauge file, with the label sets found in it (sorted by pid)."""
    out: list[LiveWorker] = []
    paths = glob.glob(str(Path(metrics_dir) / "gauge_*.db"))
    for gone in _SEEN.keys() - set(paths):
        del _SEEN[gone]
    for path in paths:
        name = mpfiles.parse_name(os.path.basename(path))
        if name is None or name.kind != "gauge" or name.worker is None:
            continue
        used = mpfiles.used_bytes(path)
        seen = _SEEN.get(path)
        if seen is not None and seen[0] == used:
            labels = seen[1]
        else:
            labels = _label_sets(path)
            if labels:
                _SEEN[path] = (used, labels)
        if labels:
            out.append(LiveWorker(name.worker, labels))
    out.sort(key=lambda w: w.identity.pid)
    return out


def _label_sets(path: str) -> tuple[Labels, ...]:
    try:
        entries = mpfiles.read(path, "gauge")
    except (OSError, mpfiles.BadMetricsFile):
        return ()  # deleted, being created right now, or quarantined at the next scrape
    found: set[Labels] = set()
    for e in entries:
        labels = dict(e.labels)
        if all(n in labels for n in catalog.WORKER_LABELS):
            found.add(tuple(labels[n] for n in catalog.WORKER_LABELS))  # type: ignore[arg-type]
    return tuple(sorted(found))
