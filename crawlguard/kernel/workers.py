"""Which process is the worker of a shard, and whether it is still that process.

A worker is identified by its pid AND its process creation time: pids are
reused (quickly on Windows), and crawlguard must never signal or trust the
metrics of a process that merely inherited a dead worker's pid. What the OS
says about a process comes from ``crawlguard.kernel.processes`` (the one module
that talks psutil), and so do the creation-time margins.

``WorkerIdentity`` is also the one check of a pid and a creation time read from a
file: its constructor refuses what no process can have (a pid that is not a
positive integer, a creation time that is not a finite, non-negative number),
so every schema that holds one (``Registration``, ``LaunchRecord``, the run
record's children, the sidecar's ladders and audit) checks it the same way.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field

from . import processes
from .errors import CorruptStateError, ProcessError
from .formats import schema
from .names import ShardName
from .processes import CREATE_TIME_TOLERANCE_S
from .statedir import StateDir, write_json_atomic

PID_MAX = 2 ** 32 - 1
"""No OS hands out a larger pid (Windows' are 32-bit, Linux's at most 2**22)."""


def check_identity(pid: object, create_time: object) -> None:
    """ValueError unless ``pid`` and ``create_time`` could be a process's."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= PID_MAX:
        raise ValueError(f"pid must be an integer from 1 to {PID_MAX}, got {pid!r}")
    if (not isinstance(create_time, (int, float)) or isinstance(create_time, bool)
            or not 0 <= create_time < 1e11):
        raise ValueError(f"create_time must be Unix seconds >= 0, got {create_time!r}")


@dataclass(frozen=True)
class WorkerIdentity:
    """A process: its pid and its creation time (Unix seconds, as psutil reports it)."""

    pid: int
    create_time: float

    def __post_init__(self) -> None:
        check_identity(self.pid, self.create_time)

    @classmethod
    def from_json(cls, data: object) -> WorkerIdentity:
        """``{"pid": int, "create_time": number}`` (what ``dataclasses.asdict`` writes) as an
        identity; ``ValueError`` (``schema.SchemaError``) naming the field that does not fit.
        In a pydantic model::

            Annotated[WorkerIdentity, PlainValidator(WorkerIdentity.from_json)]
        """
        if isinstance(data, cls):
            return data
        return schema.load(cls, data)

    @classmethod
    def current(cls) -> WorkerIdentity:
        return cls.of_pid(os.getpid())

    @classmethod
    def of_pid(cls, pid: int) -> WorkerIdentity:
        seen = processes.look(pid)
        if seen is None:
            raise ProcessError(f"no process with pid {pid}")
        return cls(pid, seen.create_time)

    @property
    def key(self) -> str:
        """A file-name-safe id unique across pid reuse: ``<pid>-<creation ms>``."""
        return f"{self.pid}-{round(self.create_time * 1000)}"

    @classmethod
    def from_key(cls, key: str) -> WorkerIdentity | None:
        """The identity a ``key`` names; None when it is no key."""
        pid, sep, ms = key.partition("-")
        if not (sep and pid.isascii() and pid.isdigit() and ms.isascii() and ms.isdigit()
                and len(pid) <= 12 and len(ms) <= 16):
            return None
        try:
            return cls(int(pid), int(ms) / 1000)
        except ValueError:  # pid 0 or beyond any OS's, a creation time of no process
            return None

    def created_at(self, create_time: float, tolerance: float = CREATE_TIME_TOLERANCE_S) -> bool:
        """Whether a process created at ``create_time`` is this one (same pid assumed)."""
        return abs(create_time - self.create_time) <= tolerance

    def same_as(self, other: WorkerIdentity) -> bool:
        return self.pid == other.pid and self.created_at(other.create_time)

    def status(self, tolerance: float = CREATE_TIME_TOLERANCE_S) -> str:
        """``alive``, ``gone`` (no such pid, or a zombie) or ``reused`` (pid is another process)."""
        seen = processes.look(self.pid)
        if seen is None or seen.zombie:
            return "gone"
        return "alive" if self.created_at(seen.create_time, tolerance) else "reused"

    def is_alive(self, tolerance: float = CREATE_TIME_TOLERANCE_S) -> bool:
        return self.status(tolerance) == "alive"


@dataclass(frozen=True)
class Registration:
    """The schema of ``shards/<shard>/worker.json``: the worker that registered."""

    shard: str
    pid: int
    create_time: float
    registered_at: float = 0.0
    host: str = ""
    argv: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        check_identity(self.pid, self.create_time)

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
        argv=tuple(sys.argv),
    )
    write_json_atomic(state.worker_file(shard), asdict(reg))
    return reg


def read_registration(state: StateDir, shard: str) -> Registration | None:
    """The registered worker of ``shard``; None when none registered yet.
    ``CorruptStateError`` when the file does not fit ``Registration``."""
    reg = schema.read_file(state.worker_file(shard), Registration,
                           f"the worker registration of shard {shard!r}")
    if reg is not None and reg.shard != shard:
        raise CorruptStateError(f"the worker registration of shard {shard!r} names shard "
                                f"{reg.shard!r}: it was not written for this shard")
    return reg


@dataclass(frozen=True)
class LaunchRecord:
    """The schema of ``shards/<shard>/launch.json``: the process the supervisor started.

    The registered worker may be a child of it (a venv launcher, ``uv run``, a
    ``.bat``), so this, not the worker, leads the process group that the
    graceful signal must reach, and ``job`` names the Windows Job Object that
    holds the whole tree (None elsewhere, or when no job could be made).
    """

    pid: int
    create_time: float
    job: str | None = None

    def __post_init__(self) -> None:
        check_identity(self.pid, self.create_time)

    @property
    def identity(self) -> WorkerIdentity:
        return WorkerIdentity(self.pid, self.create_time)

    def leads(self, worker: WorkerIdentity) -> bool:
        """Whether this launch is ``worker`` itself or one of its living ancestors."""
        if self.identity.same_as(worker):
            return True
        return any(pid == self.pid and self.identity.created_at(created)
                   for pid, created in processes.ancestors(worker.pid))


def record_launch(state: StateDir, shard: str, launch: LaunchRecord) -> None:
    write_json_atomic(state.launch_file(shard), asdict(launch))


def read_launch(state: StateDir, shard: str) -> LaunchRecord | None:
    """The shard's last launch; None when none is recorded (a worker started by hand).
    ``CorruptStateError`` when the file does not fit ``LaunchRecord``."""
    return schema.read_file(state.launch_file(shard), LaunchRecord,
                            f"the launch record of shard {shard!r}")
