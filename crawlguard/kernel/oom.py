"""Out-of-memory batches: the crawl's twin, recorded before the worker dies.

With the driver's "Prefer No Sysmem Fallback" (546.01+) or torch's
``cudaMallocAsync`` backend a spill is no crawl: the batch raises
``torch.OutOfMemoryError`` and, unless the build catches it, the worker dies.
The tracker writes one record per OOM batch before the exception leaves it::

    shards/<shard>/oom/<pid>-<creation ms>.json
        {"shard", "stage", "device", "gpu", "pid", "create_time", "at",
         "genes", "error", "count", "recovered"}

One file per worker process (a later OOM of the same process rewrites it with
``count`` + 1), written atomically. A batch that finishes after an OOM (the
build caught it, e.g. FlagEmbedding's batch-size probe, and went on) marks the
record ``recovered``: only an OOM the worker did not survive is an *OOM death*.
The exporter serves the deaths as ``bfm_worker_oom_timestamp_seconds``
(``BFMShardOOM``), and the supervisor reads the record of a worker that just
exited to wait, bounded, for the sidecar to climb the ladder before it
relaunches (so the CPU rung's environment reaches that very relaunch).

Standard library only, and torch is never imported here: an exception is
recognised by its class (``torch.OutOfMemoryError``, which
``torch.cuda.OutOfMemoryError`` aliases) only when the build loaded torch, and
the other forms (``torch.AcceleratorError`` "CUDA error: out of memory", cuBLAS
and cuDNN allocation failures) by their text (``is_oom``).
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .errors import StateError
from .names import ShardName
from .statedir import StateDir, read_json, write_json_atomic

OOM_DIR = "oom"
OOM_PREFIXES = ("CUDA out of memory", "out of memory")
"""torch before 2.1 raised a plain RuntimeError starting so."""
OOM_TEXTS = ("CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED",
             "CUDNN_STATUS_ALLOC_FAILED", "cudaErrorMemoryAllocation")
"""The device's own out-of-memory, as torch words it where it raises no OutOfMemoryError:
``torch.AcceleratorError`` (a RuntimeError) or a RuntimeError from a CUDA call, cuBLAS
or cuDNN failing to allocate its workspace."""


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is one of torch's out-of-memory errors (torch is never imported here).

    ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError`` aliases it) by class;
    otherwise a ``RuntimeError`` (``torch.AcceleratorError`` is one) whose text is
    an OOM's (``OOM_PREFIXES``, ``OOM_TEXTS``).
    """
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if isinstance(oom_type, type) and isinstance(exc, oom_type):
        return True
    for cls in type(exc).__mro__:
        if cls.__name__ == "OutOfMemoryError" and cls.__module__.startswith("torch"):
            return True
    if not isinstance(exc, RuntimeError) or not exc.args:
        return False
    text = str(exc.args[0])
    return text.startswith(OOM_PREFIXES) or any(t in text for t in OOM_TEXTS)


@dataclass(frozen=True)
class OomRecord:
    shard: str
    stage: str
    device: str
    gpu: str
    pid: int
    create_time: float
    at: float
    genes: float
    error: str
    count: int = 1
    recovered: bool = False

    @property
    def key(self) -> str:
        """The worker's identity key (``crawlguard.kernel.workers.WorkerIdentity.key``)."""
        return f"{self.pid}-{round(self.create_time * 1000)}"


def oom_dir(state: StateDir, shard: str) -> Path:
    return state.shard_dir(shard) / OOM_DIR


def record_path(state: StateDir, shard: str, key: str) -> Path:
    return oom_dir(state, shard) / f"{key}.json"


def write_record(state: StateDir, record: OomRecord) -> None:
    """Write (or bump) this worker's record; raises ``StateError``."""
    path = record_path(state, record.shard, record.key)
    old = _parse(record.shard, path)
    if old is not None:
        record = replace(record, count=old.count + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, asdict(record))


def mark_recovered(state: StateDir, shard: str, key: str) -> None:
    """The worker finished a batch after its OOM: it survived it."""
    path = record_path(state, shard, key)
    old = _parse(shard, path)
    if old is not None and not old.recovered:
        write_json_atomic(path, asdict(replace(old, recovered=True)))


def read_record(state: StateDir, shard: str, key: str) -> OomRecord | None:
    return _parse(shard, record_path(state, shard, key))


def read_records(state: StateDir, shard: str) -> list[OomRecord]:
    """Every readable record of ``shard``, oldest first; unreadable ones are skipped."""
    try:
        paths = sorted(oom_dir(state, shard).glob("*.json"))
    except OSError:
        return []
    out = [r for r in (_parse(shard, p) for p in paths) if r is not None]
    return sorted(out, key=lambda r: r.at)


def all_records(state: StateDir) -> list[OomRecord]:
    out: list[OomRecord] = []
    with contextlib.suppress(StateError):
        for shard in state.shards():
            out.extend(read_records(state, shard))
    return out


def _parse(shard: str, path: Path) -> OomRecord | None:
    try:
        data: Any = read_json(path)
    except StateError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        rec = OomRecord(
            shard=ShardName.parse(data["shard"]), stage=str(data["stage"]),
            device=str(data["device"]), gpu=str(data.get("gpu", "")), pid=int(data["pid"]),
            create_time=float(data["create_time"]), at=float(data["at"]),
            genes=float(data.get("genes", 0.0)), error=str(data.get("error", ""))[:500],
            count=int(data.get("count", 1)), recovered=bool(data.get("recovered", False)))
    except (KeyError, TypeError, ValueError):
        return None
    if rec.shard != shard or rec.pid <= 0 or not math.isfinite(rec.at):
        return None
    return rec


