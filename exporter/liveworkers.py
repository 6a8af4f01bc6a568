"""Which worker processes the exporter is serving, and the label sets each writes.

A worker's live-gauge file is named after its identity (``<pid>-<creation
ms>``, see ``mpfiles``) and holds the series of every tracker it created, each
with the worker labels (shard, stage, device, gpu). Per-process evidence read
outside the worker (its shared GPU memory) is published under those labels.
Read after ``WorkerCollector`` pruned the files of dead workers.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

from crawlguard.workers import WorkerIdentity

from . import catalog
from .mpfiles import GAUGE_MODE

Labels = tuple[str, str, str, str]
"""Values of ``catalog.WORKER_LABELS``, in that order."""


@dataclass(frozen=True)
class LiveWorker:
    identity: WorkerIdentity
    labels: tuple[Labels, ...]


def live_workers(metrics_dir: Path) -> list[LiveWorker]:
    """Workers with a live-gauge file, with the label sets found in it (sorted by pid)."""
    prefix = f"gauge_{GAUGE_MODE}_"
    out: list[LiveWorker] = []
    for path in glob.glob(str(Path(metrics_dir) / f"{prefix}*.db")):
        identity = WorkerIdentity.from_key(os.path.basename(path)[len(prefix):-len(".db")])
        if identity is None:
            continue
        labels = _label_sets(path)
        if labels:
            out.append(LiveWorker(identity, labels))
    out.sort(key=lambda w: w.identity.pid)
    return out


def _label_sets(path: str) -> tuple[Labels, ...]:
    found: set[Labels] = set()
    try:
        entries = list(MmapedDict.read_all_values_from_file(path))
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a truncated file
        return ()  # deleted or being created right now: next scrape sees it
    for key, *_ in entries:
        try:
            _, _, labels, _ = json.loads(key)
            found.add(tuple(str(labels[n]) for n in catalog.WORKER_LABELS))  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError):
            continue
    return tuple(sorted(found))
