"""Which process is the worker of a shard, and whether it is still that process.

A worker is identified by its pid AND its process creation time: pids are
reused (quickly on Windows), and crawlguard must never signal or trust the
metrics of a process that merely inherited a dead worker's pid. psutil is the
only place that answers; its errors are translated here.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from .errors import CorruptStateError, ProcessError
from .names import ShardName
from .statedir import StateDir, read_json, write_json_atomic

# psutil derives creation time from boot time + start ticks on Linux and from a
# 100 ns FILETIME on Windows; two readings of the same process agree far
# closer than this, while a reused pid starts at least a scheduler tick later.
CREATE_TIME_TOLERANCE_S = 0.005


@dataclass(frozen=True)
class WorkerIdentity:
    pid: int
    create_time: float

    @classmethod
    def current(cls) -> WorkerIdentity:
        return cls.of_pid(os.getpid())

    @classmethod
    def of_pid(cls, pid: int) -> WorkerIdentity:
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except psutil.NoSuchProcess as exc:
            raise ProcessError(f"no process with pid {pid}") from exc
        except psutil.Error as exc:
            raise ProcessError(f"cannot inspect pid {pid}: {exc}") from exc

    @property
    def key(self) -> str:
        """A file-name-safe id unique across pid reuse: ``<pid>-<creation ms>``."""
        return f"{self.pid}-{round(self.create_time * 1000)}"

    @classmethod
    def from_key(cls, key: str) -> WorkerIdentity | None:
        pid, sep, ms = key.partition("-")
        if not sep or not pid.isdigit() or not ms.isdigit():
            return None
        return cls(int(pid), int(ms) / 1000)

    def created_at(self, create_time: float, tolerance: float = CREATE_TIME_TOLERANCE_S) -> bool:
        """Whether a process created at ``create_time`` is this one (same pid assumed)."""
        return abs(create_time - self.create_time) <= tolerance

    def same_as(self, other: WorkerIdentity) -> bool:
        return self.pid == other.pid and self.created_at(other.create_time)

    def status(self, tolerance: float = CREATE_TIME_TOLERANCE_S) -> str:
        """``alive``, ``gone`` (no such pid, or a zombie) or ``reused`` (pid is another process)."""
        try:
            proc = psutil.Process(self.pid)
            with proc.oneshot():  # one read of /proc/<pid>/stat for both answers
                created = proc.create_time()
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return "gone"
        except psutil.NoSuchProcess:
            return "gone"
        except psutil.Error as exc:
            raise ProcessError(f"cannot inspect pid {self.pid}: {exc}") from exc
        return "alive" if self.created_at(created, tolerance) else "reused"

    def is_alive(self, tolerance: float = CREATE_TIME_TOLERANCE_S) -> bool:
        return self.status(tolerance) == "alive"


@dataclass(frozen=True)
class Registration:
    """What ``shards/<shard>/worker.json`` holds."""

    shard: str
    pid: int
    create_time: float
    registered_at: float
    host: str
    argv: list[str]

    @property
    def identity(self) -> WorkerIdentity:
        return WorkerIdentity(self.pid, self.create_time)


def register_worker(state: StateDir, shard: str, identity: WorkerIdentity | None = None,
                    now: float | None = None) -> Registration:
    """Record ``identity`` (default: this process) as the worker of ``shard``."""
    ident = identity or WorkerIdentity.current()
    reg = Registration(
        shard=ShardName.parse(shard), pid=ident.pid, create_time=ident.create_time,
        registered_at=time.time() if now is None else now, host=socket.gethostname(),
        argv=list(sys.argv),
    )
    write_json_atomic(state.worker_file(shard), asdict(reg))
    return reg


def read_registration(state: StateDir, shard: str) -> Registration | None:
    """The registered worker of ``shard``; None when none registered yet."""
    data = read_json(state.worker_file(shard))
    if data is None:
        return None
    return _parse(shard, data)


def _parse(shard: str, data: Any) -> Registration:
    try:
        pid, created = data["pid"], data["create_time"]
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise ValueError("pid")
        if not isinstance(created, (int, float)) or isinstance(created, bool):
            raise ValueError("create_time")
        return Registration(
            shard=shard, pid=pid, create_time=float(created),
            registered_at=float(data.get("registered_at", 0.0)),
            host=str(data.get("host", "")), argv=[str(a) for a in data.get("argv", [])],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptStateError(f"worker registration of shard {shard!r} is malformed "
                                f"({exc})") from exc


@dataclass(frozen=True)
class LaunchRecord:
    """What ``shards/<shard>/launch.json`` holds: the process the supervisor started.

    The registered worker may be a child of it (a venv launcher, ``uv run``, a
    ``.bat``), so this, not the worker, leads the process group that the
    graceful signal must reach, and ``job`` names the Windows Job Object that
    holds the whole tree (None elsewhere, or when no job could be made).
    """

    pid: int
    create_time: float
    job: str | None = None

    @property
    def identity(self) -> WorkerIdentity:
        return WorkerIdentity(self.pid, self.create_time)

    def leads(self, worker: WorkerIdentity) -> bool:
        """Whether this launch is ``worker`` itself or one of its living ancestors."""
        if self.identity.same_as(worker):
            return True
        try:
            parents = psutil.Process(worker.pid).parents()
            return any(p.pid == self.pid and self.identity.created_at(p.create_time())
                       for p in parents)
        except psutil.Error:
            return False


def record_launch(state: StateDir, shard: str, launch: LaunchRecord) -> None:
    write_json_atomic(state.launch_file(shard), asdict(launch))


def read_launch(state: StateDir, shard: str) -> LaunchRecord | None:
    """The shard's last launch; None when none is recorded (a worker started by hand)."""
    data = read_json(state.launch_file(shard))
    if data is None:
        return None
    try:
        pid, created, job = data["pid"], data["create_time"], data.get("job")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise ValueError("pid")
        if not isinstance(created, (int, float)) or isinstance(created, bool):
            raise ValueError("create_time")
        if job is not None and not isinstance(job, str):
            raise ValueError("job")
        return LaunchRecord(pid, float(created), job)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptStateError(f"launch record of shard {shard!r} is malformed ({exc})") from exc
