"""The state directory: every durable fact of one rebuild, and how it is written.

Layout (``HELIX_BFM_STATE_DIR``, default ``.crawlguard``)::

    .lock                           one lock shared by every writer of shard state
    .sidecar.lock                   held by the one sidecar serving this state dir
    sidecar.json                    the sidecar's pause switch (durable)
    metrics/                        prometheus_client multiprocess files of the workers
    audit.jsonl                     the sidecar's decisions, one JSON object a line
    shards/<shard>/worker.json      the registered worker: pid + process creation time
    shards/<shard>/launch.json      the process the supervisor launched for it (group leader)
    shards/<shard>/baseline-<stage>-<device>.json
    shards/<shard>/ladder.json      the sidecar's ladder: crawls, rung, env overrides, history
    shards/<shard>/batches.jsonl    one line per finished batch (the report's evidence)

Names are validated before they become path components (``safe_name``), and
every JSON file is replaced atomically (write to a temporary file, fsync,
rename), so a crash at any moment leaves either the old or the new file, never
half of one. Readers still treat a file that does not parse as
``CorruptStateError`` because a person may have edited it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from . import longpaths
from .errors import CorruptStateError, StateError, UnsafeNameError

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Device names like "cuda:0" carry a colon, which Windows forbids in paths.
_DEVICE = re.compile(r"^[a-z][a-z0-9_]{0,31}(:[0-9]{1,4})?$")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {f"{p}{i}" for p in ("com", "lpt")
                                                     for i in range(1, 10)}


def safe_name(value: object, kind: str = "shard") -> str:
    """Return ``value`` if it may be a path component on POSIX and Windows alike."""
    if not isinstance(value, str):
        raise UnsafeNameError(kind, value, "must be a string")
    if not _SAFE.match(value):
        raise UnsafeNameError(
            kind, value, "use 1-128 of A-Z a-z 0-9 . _ - , starting with a letter or digit")
    if ".." in value or value.endswith("."):
        raise UnsafeNameError(kind, value, "'..' and a trailing '.' are not allowed")
    if value.split(".")[0].lower() in _WINDOWS_RESERVED:
        raise UnsafeNameError(kind, value, "reserved device name on Windows")
    return value


def safe_device(value: object) -> str:
    """Validate a torch-style device name (``cpu``, ``cuda``, ``cuda:1``)."""
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise UnsafeNameError("device", value, "expected a device like 'cpu', 'cuda' or 'cuda:0'")
    return value


def gpu_label(device: str) -> str:
    """The ``gpu`` label of a worker series: the CUDA index, '' for non-CUDA devices."""
    kind, _, index = device.partition(":")
    if kind != "cuda":
        return ""
    return index or "0"


class StateDir:
    """Paths and primitives of one state directory. Construction touches nothing."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._case_checked: set[str] = set()

    def __repr__(self) -> str:
        return f"StateDir({str(self.root)!r})"

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.jsonl"

    def shard_dir(self, shard: str) -> Path:
        name = safe_name(shard)
        path = self.root / "shards" / name
        if name not in self._case_checked:
            self._check_case(name)
        if longpaths.too_long(path / "launch.json"):
            raise UnsafeNameError("shard", shard, "its files would pass Windows' 260-character "
                                  f"path limit; set {longpaths.REGISTRY_SETTING}")
        return path

    def _check_case(self, name: str) -> None:
        """Refuse a shard whose name equals another's under casefold(): on NTFS (case
        insensitive) both would share one directory, one ladder, one registration."""
        try:
            entries = os.listdir(self.root / "shards")
        except OSError:
            return  # no shards yet: nothing to collide with
        folded = name.casefold()
        for entry in entries:
            if entry != name and entry.casefold() == folded:
                raise UnsafeNameError("shard", name, f"differs only in case from shard "
                                      f"{entry!r} of state dir {self.root}; on Windows both "
                                      "would be one directory")
        if name in entries:
            self._case_checked.add(name)  # it exists: any later twin is refused above

    def worker_file(self, shard: str) -> Path:
        return self.shard_dir(shard) / "worker.json"

    def launch_file(self, shard: str) -> Path:
        return self.shard_dir(shard) / "launch.json"

    def ladder_file(self, shard: str) -> Path:
        return self.shard_dir(shard) / "ladder.json"

    def batches_file(self, shard: str) -> Path:
        return self.shard_dir(shard) / "batches.jsonl"

    def baseline_file(self, shard: str, stage: str, device: str) -> Path:
        dev = safe_device(device).replace(":", "")
        path = self.shard_dir(shard) / f"baseline-{safe_name(stage, 'stage')}-{dev}.json"
        if longpaths.too_long(path):
            raise UnsafeNameError("stage", stage, "its baseline file would pass Windows' "
                                  f"260-character path limit; set {longpaths.REGISTRY_SETTING}")
        return path

    def shards(self) -> list[str]:
        """Shards that have any state, sorted; directories with unsafe names are skipped."""
        base = self.root / "shards"
        try:
            entries = sorted(p.name for p in base.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(f"cannot list {base}: {exc.strerror}") from exc
        out = []
        for name in entries:
            with contextlib.suppress(UnsafeNameError):
                out.append(safe_name(name))
        return out

    def ensure(self, path: Path | None = None) -> Path:
        target = self.root if path is None else path
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create {target}: {exc.strerror}") from exc
        return target

    @contextlib.contextmanager
    def lock(self, timeout: float = 30.0) -> Iterator[None]:
        """The lock every writer of shard state holds (sidecar, reset, supervisor)."""
        self.ensure()
        try:
            # filelock polls a contended lock; its default 50 ms poll would add up to
            # 50 ms to a webhook answer whenever the supervisor holds the lock.
            with FileLock(str(self.root / ".lock"), timeout=timeout, poll_interval=0.002):
                yield
        except Timeout as exc:
            raise StateError(f"state dir {self.root} is locked by another process "
                             f"for more than {timeout:g}s") from exc


def write_json_atomic(path: Path, data: Any, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` as JSON: temp file, fsync, rename, fsync dir.

    ``durable=False`` skips the fsyncs, for files that describe live processes only
    and are rewritten many times a second (the simulated GPU): after a crash nothing
    in them matters, but the rename is still atomic and still retried on Windows."""
    payload = json.dumps(data, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            _replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if durable:
            _fsync_dir(path.parent)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _replace(src: str, dst: Path) -> None:
    # On Windows a reader holding dst open makes the rename fail for a moment.
    for attempt in range(50):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if sys.platform != "win32" or attempt == 49:
                raise
            time.sleep(0.02)


def _fsync_dir(directory: Path) -> None:
    if sys.platform == "win32":  # directories cannot be opened for fsync on Windows
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``; ``None`` when it does not exist; CorruptStateError when bad."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptStateError(f"{path} is not valid JSON ({exc}); it was not written "
                                "by crawlguard or was cut short") from exc
