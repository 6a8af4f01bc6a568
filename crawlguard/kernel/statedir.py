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
    vram.jsonl                      the supervisor's VRAM samples (the report's evidence)
    drills/<shard>.json             a fire drill in progress (``kernel.drills``)
    run/up.json                     a running ``crawlguard up``: how clients reach it

The state dir is the trust boundary: whoever can write ``worker.json`` decides
which process a rung signals. A state dir crawlguard creates is private from
its creation (``crawlguard.kernel.private``: mode 0700; on Windows a protected
DACL for this user, SYSTEM and Administrators). A long-running process
(``sidecar``, ``up``, ``run``) opens it with ``StateDir.open_for_service()``:
it must be writable, nobody else may write it (POSIX: not writable by every
user; Windows: no allow entry for another user or group, inherited or not),
and from then on it must stay the same directory. One that vanishes (or is replaced by another) is
never silently recreated: every write refuses with ``StateError`` and a
critical log line, because a fresh, empty state dir forgets the ladders (a
CPU-demoted shard would go back to the GPU).


What is inside each file is owned by its format module (``crawlguard.kernel.formats``):
one reader and one writer each. Shard and stage names are ``names.ShardName``
and devices are parsed by ``devices`` before they become path components, and
every JSON file is replaced atomically (write to a temporary file, fsync,
rename), so a crash at any moment leaves either the old or the new file, never
half of one; once ``write_json_atomic`` returns, the file survives a crash of
the host too. Readers still treat a file that does not parse as
``CorruptStateError`` because a person may have edited it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import longpaths, private
from .devices import file_part
from .errors import CorruptStateError, StateError, StateGoneError, UnsafeNameError
from .names import ShardName

__all__ = ["StateDir", "fsync_dir", "read_json", "write_json_atomic", "write_volatile_json"]
log = logging.getLogger("crawlguard.kernel.statedir")
# Roots opened for service by this process -> (st_dev, st_ino) when opened.
_ESTABLISHED: dict[str, tuple[int, int]] = {}


class StateDir:
    """Paths and primitives of one state directory. Construction touches nothing."""

    def __init__(self, root: str | os.PathLike[str], create: bool = True) -> None:
        self.root = Path(root)
        self.create = create
        """False in a child of ``up``/``run`` (``settings.state_dir_established``): the
        root exists already, and one found missing is refused, never made afresh."""
        self._case_checked: set[str] = set()

    def __repr__(self) -> str:
        return f"StateDir({str(self.root)!r})"

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    @property
    def pause_file(self) -> Path:
        return self.root / "sidecar.json"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def vram_log(self) -> Path:
        return self.root / "vram.jsonl"

    def shard_dir(self, shard: str) -> Path:
        name = ShardName.parse(shard)
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
        stage_part = ShardName.parse(stage, "stage")
        path = self.shard_dir(shard) / f"baseline-{stage_part}-{file_part(device)}.json"
        if longpaths.too_long(path):
            raise UnsafeNameError("stage", stage, "its baseline file would pass Windows' "
                                  f"260-character path limit; set {longpaths.REGISTRY_SETTING}")
        return path

    def knows(self, shard: str) -> bool:
        """Whether ``shard`` has a ladder (or something in its place) or a registered
        worker; else it is a stranger, and nothing may be created for it.
        ``UnsafeNameError`` for a name this state dir refuses (one that differs only in
        case from a shard of it), ``StateError`` when it cannot be looked up."""
        ladder, worker = self.ladder_file(shard), self.worker_file(shard)
        try:
            return ladder.exists() or worker.is_file()
        except OSError as exc:
            raise StateError(f"cannot look up shard {shard!r} in {self.root}: "
                             f"{exc.strerror or exc}") from exc

    def shards(self) -> list[ShardName]:
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
                out.append(ShardName.parse(name))
        return out

    def ensure(self, path: Path | None = None) -> Path:
        """Create the root (private: ``crawlguard.kernel.private``) or a folder in it;
        never re-creates a root this process opened for service (``check_present``)."""
        check_present(self.root)
        target = self.root if path is None else path
        if not self.create:
            self.establish()
        try:
            if not self.root.is_dir():
                private.make_dir(self.root)
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create {target}: {exc.strerror}") from exc
        return target

    def establish(self) -> None:
        """Remember the root as it is now (``check_present``): from here on this process
        refuses to recreate it. StateGoneError (logged critical) when it is missing."""
        full = os.path.abspath(self.root)
        if full in _ESTABLISHED:
            return
        try:
            st = os.stat(self.root)
        except OSError as exc:
            msg = (f"state dir {self.root} is missing ({exc.strerror or exc}); the process "
                   "that made it is running, so it vanished: refusing to create an empty one "
                   "(it would forget every ladder)")
            log.critical(msg)
            raise StateGoneError(msg) from exc
        _ESTABLISHED[full] = (st.st_dev, st.st_ino)

    def open_for_service(self) -> None:
        """At the start of a long-running process: create the root if needed, prove it
        writable (a probe file), and remember which directory it is from now on."""
        if self.create:
            _ESTABLISHED.pop(os.path.abspath(self.root), None)  # a new start decides afresh
        self.ensure()
        try:
            fd, probe = tempfile.mkstemp(prefix=".probe.", dir=self.root)
            os.close(fd)
            os.unlink(probe)
            st = os.stat(self.root)
        except OSError as exc:
            raise StateError(f"state dir {self.root} is not writable: "
                             f"{exc.strerror or exc} (check its owner and mode, or point "
                             "HELIX_BFM_STATE_DIR / --state-dir elsewhere)") from exc
        self.check_private()
        _ESTABLISHED[os.path.abspath(self.root)] = (st.st_dev, st.st_ino)

    def check_private(self) -> None:
        """Refuse (StateError) a root that someone else may write: they could plant a
        ``worker.json`` and steer a rung at any of this user's processes."""
        try:
            others = private.others_may_write(self.root)
        except OSError as exc:
            raise StateError(f"cannot tell who may write state dir {self.root}: "
                             f"{exc.strerror or exc}") from exc
        if others:
            raise StateError(f"state dir {self.root} is not private: {'; '.join(others)}. "
                             "Whoever can write it decides which process a rung signals. "
                             f"Fix: {private.fix_for_dir(self.root)}")

    @contextlib.contextmanager
    def lock(self, timeout: float = 30.0) -> Iterator[None]:
        """The lock every writer of shard state holds (sidecar, reset, supervisor)."""
        # Imported here, not at the top: readers of the layout (crawlguard.sidecar.resume, in a
        # build's own supervisor loop) take no lock and need not load filelock.
        from filelock import FileLock, Timeout

        self.ensure()
        try:
            # filelock polls a contended lock; its default 50 ms poll would add up to
            # 50 ms to a webhook answer whenever the supervisor holds the lock.
            with FileLock(str(self.root / ".lock"), timeout=timeout, poll_interval=0.002):
                yield
        except Timeout as exc:
            raise StateError(f"state dir {self.root} is locked by another process "
                             f"for more than {timeout:g}s") from exc


def check_present(path: str | os.PathLike[str]) -> None:
    """Refuse (StateGoneError, logged critical) when ``path`` lies in a state dir this process
    opened for service and that directory is gone or is no longer the same one."""
    if not _ESTABLISHED:
        return
    full = os.path.abspath(path)
    for root, ident in _ESTABLISHED.items():
        if full != root and not full.startswith(root + os.sep):
            continue
        try:
            st = os.stat(root)
            same = (st.st_dev, st.st_ino) == ident
        except OSError:
            same = False
        if not same:
            msg = (f"state dir {root} vanished or was replaced while crawlguard was running; "
                   "refusing to recreate it (an empty one would forget every ladder). "
                   "Put it back, or stop crawlguard and start it on the new one")
            log.critical(msg)
            raise StateGoneError(msg)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON, durably: temp file, fsync, rename, fsync dir.
    When this returns the new file is what every process reads, and it survives a crash
    of the host."""
    _write_json(path, data, durable=True)


def write_volatile_json(path: Path, data: Any) -> None:
    """``write_json_atomic`` without the fsyncs, for files that describe live processes
    only and are rewritten many times a second (the simulated GPU,
    ``crawlguard.refbuild.simgpu``): after a crash of the host nothing in them matters.
    Never for state: a decision written with it could be lost after it was answered."""
    _write_json(path, data, durable=False)


def _write_json(path: Path, data: Any, durable: bool) -> None:
    payload = json.dumps(data, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    check_present(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                if durable:
                    os.fsync(fh.fileno())
            _replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if durable:
            fsync_dir(path.parent)
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


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` durable (its renames and deletions)."""
    if sys.platform == "win32":  # directories cannot be opened for fsync on Windows
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


MAX_JSON_BYTES = 16 << 20
"""No state file crawlguard writes comes near this; a larger one is not read into memory."""


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``; ``None`` when it does not exist; ``CorruptStateError`` when it
    is not a file of JSON crawlguard could have written (a directory, a device, more than
    ``MAX_JSON_BYTES``, not UTF-8, not JSON, nested too deep for the parser);
    ``StateError`` when it cannot be read."""
    try:
        # Looked at before it is opened: opening a FIFO would wait for a writer.
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise CorruptStateError(f"{path} is {kind}; crawlguard writes a JSON file there")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_JSON_BYTES:
        raise CorruptStateError(f"{path} is larger than {MAX_JSON_BYTES} bytes")
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        # ValueError: not UTF-8, not JSON, or an integer too long to convert;
        # RecursionError: arrays or objects nested deeper than the parser goes.
        raise CorruptStateError(f"{path} is not valid JSON ({_short(exc)}); it was not "
                                "written by crawlguard or was cut short") from exc
    if value is None:  # None is "no file" to the callers: a file of null is not that
        raise CorruptStateError(f"{path} holds null; crawlguard writes an object there")
    return value


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
