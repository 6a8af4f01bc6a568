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

torch is never imported here: an exception is recognised by its class
(``torch.OutOfMemoryError``, which ``torch.cuda.OutOfMemoryError`` aliases)
only when the build loaded torch, and the other forms (``torch.AcceleratorError``
"CUDA error: out of memory", cuBLAS and cuDNN allocation failures) by their text
(``is_oom``).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from .errors import StateError
from .formats.schema import Time, read_file
from .names import ShardName
from .statedir import StateDir, write_json_atomic
from .workers import ProcessRecord

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


class OomRecord(ProcessRecord):
    """The schema of ``shards/<shard>/oom/<key>.json``."""

    shard: Annotated[str, AfterValidator(ShardName.parse)]
    stage: str
    device: str
    gpu: str
    at: Time
    genes: float
    error: str
    count: int = Field(default=1, ge=1)
    recovered: bool = False

    @property
    def key(self) -> str:
        """The worker's identity key (``crawlguard.kernel.workers.WorkerIdentity.key``)."""
        return self.identity.key


def oom_dir(state: StateDir, shard: str) -> Path:
    return state.shard_dir(shard) / OOM_DIR


def record_path(state: StateDir, shard: str, key: str) -> Path:
    return oom_dir(state, shard) / f"{key}.json"


def write_record(state: StateDir, record: OomRecord) -> None:
    """Write (or bump) this worker's record; raises ``StateError``."""
    path = record_path(state, record.shard, record.key)
    old = _parse(record.shard, path)
    if old is not None:
        record = record.model_copy(update={"count": old.count + 1})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record.model_dump(mode="json"))


def mark_recovered(state: StateDir, shard: str, key: str) -> None:
    """The worker finished a batch after its OOM: it survived it."""
    path = record_path(state, shard, key)
    old = _parse(shard, path)
    if old is not None and not old.recovered:
        write_json_atomic(path, old.model_copy(update={"recovered": True}).model_dump(mode="json"))


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
    """The record at ``path``; None when there is none, or it is unreadable (skipped: an
    OOM record is evidence, and one bad file must not hide the others)."""
    try:
        rec = read_file(OomRecord, path, "an OOM record")
    except StateError:
        return None
    return rec if rec is not None and rec.shard == shard else None
