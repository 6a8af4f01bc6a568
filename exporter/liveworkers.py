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
import struct
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

from crawlguard.kernel.workers import WorkerIdentity

from . import catalog
from .mpfiles import GAUGE_MODE

Labels = tuple[str, str, str, str]
"""Values of ``catalog.WORKER_LABELS``, in that order."""


@dataclass(frozen=True)
class LiveWorker:
    identity: WorkerIdentity
    labels: tuple[Labels, ...]


_SEEN: dict[str, tuple[int, tuple[Labels, ...]]] = {}
"""path -> (bytes used, label sets) at the last read. A file's label sets change
only when a series is added, which grows its used size (MmapedDict's header):
a scrape re-parses only such files, not every file at every batch."""


def live_workers(metrics_dir: Path) -> list[LiveWorker]:
    """Workers with a live-gauge file, with the label sets found in it (sorted by pid)."""
    prefix = f"gauge_{GAUGE_MODE}_"
    out: list[LiveWorker] = []
    paths = glob.glob(str(Path(metrics_dir) / f"{prefix}*.db"))
    for gone in _SEEN.keys() - set(paths):
        del _SEEN[gone]
    for path in paths:
        identity = WorkerIdentity.from_key(os.path.basename(path)[len(prefix):-len(".db")])
        if identity is None:
            continue
        used = _used(path)
        seen = _SEEN.get(path)
        if seen is not None and seen[0] == used:
            labels = seen[1]
        else:
            labels = _label_sets(path)
            if labels:
                _SEEN[path] = (used, labels)
        if labels:
            out.append(LiveWorker(identity, labels))
    out.sort(key=lambda w: w.identity.pid)
    return out


def _used(path: str) -> int:
    """The used size in a MmapedDict file's header (-1 when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return -1
    return struct.unpack("i", head)[0] if len(head) == 4 else -1


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
