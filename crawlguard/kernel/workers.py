"""Which process is the worker of a shard, and whether it is still that process.

A worker is identified by its pid AND its process creation time: pids are
reused (quickly on Windows), and crawlguard must never signal or trust the
metrics of a process that merely inherited a dead worker's pid. What the OS
says about a process comes from ``crawlguard.kernel.processes`` (the one module
that talks psutil), and so do the creation-time margins.

A worker identity read from a file or written to one has one JSON form,
``crawlguard.kernel.formats.schema.WorkerJson``, whose rule (a pid from 1 to
``PID_MAX``, a creation time a process can have) every schema that holds one
inherits (``Registration``, ``LaunchRecord``, the OOM records, the run record's
children) or nests (the sidecar's ladders and audit lines); ``WorkerIdentity``
holds an identity made in code to the same rule (``schema.check_identity``).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass

from pydantic import Field

from . import processes
from .errors import CorruptStateError, ProcessError
from .formats.schema import Time, WorkerJson, check_identity, read_file
from .names import ShardName
from .processes import CREATE_TIME_TOLERANCE_S
from .statedir import StateDir, write_json_atomic


@dataclass(frozen=True)
class WorkerIdentity:
    """A process: its pid and its creation time (Unix seconds, as psutil reports it)."""

    pid: int
    create_time: float

    def __post_init__(self) -> None:
        check_identity(self.pid, self.create_time)

    @classmethod
    def from_json(cls, data: object) -> WorkerIdentity:
        """An identity from its JSON form: a parsed ``{"pid": int, "create_time": number}``,
        or a ``WorkerJson`` (a ``Registration``, a ``LaunchRecord`` ...); ``ValueError``
        (pydantic's ``ValidationError``) naming the field that does not fit."""
        doc = data if isinstance(data, WorkerJson) else WorkerJson.model_validate(data)
        return cls(doc.pid, doc.create_time)

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


class ProcessRecord(WorkerJson):
    """What a state file writes about one process: its identity, flat (``WorkerJson``'s
    keys at the top of the document), and whatever the file adds."""

    @property
    def identity(self) -> WorkerIdentity:
        return WorkerIdentity.from_json(self)


class Registration(ProcessRecord):
    """The schema of ``shards/<shard>/worker.json``: the worker that registered."""

    shard: str
    registered_at: Time = 0.0
    host: str = ""
    argv: list[str] = Field(default_factory=list)


def register_worker(state: StateDir, shard: str, identity: WorkerIdentity | None = None,
                    now: float | None = None) -> Registration:
    """Record ``identity`` (default: this process) as the worker of ``shard``."""
    ident = identity or WorkerIdentity.current()
    reg = Registration(
        shard=ShardName.parse(shard), pid=ident.pid, create_time=ident.create_time,
        registered_at=time.time() if now is None else now, host=socket.gethostname(),
        argv=list(sys.argv),
    )
    write_json_atomic(state.worker_file(shard), reg.model_dump(mode="json"))
    return reg


def read_registration(state: StateDir, shard: str) -> Registration | None:
    """The registered worker of ``shard``; None when none registered yet.
    ``CorruptStateError`` when the file does not fit ``Registration``."""
    reg = read_file(Registration, state.worker_file(shard), "a worker registration")
    if reg is not None and reg.shard != shard:
        raise CorruptStateError(f"the worker registration of shard {shard!r} names shard "
                                f"{reg.shard!r}: it was not written for this shard")
    return reg


class LaunchRecord(ProcessRecord):
    """The schema of ``shards/<shard>/launch.json``: the process the supervisor started.

    The registered worker may be a child of it (a venv launcher, ``uv run``, a
    ``.bat``), so this, not the worker, leads the process group that the
    graceful signal must reach, and ``job`` names the Windows Job Object that
    holds the whole tree (None elsewhere, or when no job could be made).
    """

    job: str | None = None

    def leads(self, worker: WorkerIdentity) -> bool:
        """Whether this launch is ``worker`` itself or one of its living ancestors."""
        if self.identity.same_as(worker):
            return True
        return any(pid == self.pid and self.identity.created_at(created)
                   for pid, created in processes.ancestors(worker.pid))


def record_launch(state: StateDir, shard: str, launch: LaunchRecord) -> None:
    write_json_atomic(state.launch_file(shard), launch.model_dump(mode="json"))


def read_launch(state: StateDir, shard: str) -> LaunchRecord | None:
    """The shard's last launch; None when none is recorded (a worker started by hand).
    ``CorruptStateError`` when the file does not fit ``LaunchRecord``."""
    return read_file(LaunchRecord, state.launch_file(shard), "a launch record")


def leading_launch(launch: LaunchRecord | None, worker: WorkerIdentity) -> LaunchRecord | None:
    """``launch`` when it is still the process the supervisor started (pid AND creation
    time) and is ``worker`` or one of its ancestors; else None (not used)."""
    if launch is None:
        return None
    try:
        return launch if launch.identity.is_alive() and launch.leads(worker) else None
    except ProcessError:
        return None


def posix_group(worker: WorkerIdentity, launch: LaunchRecord | None) -> int | None:
    """The POSIX process group that reaches ``worker``: the group the verified ``launch``
    leads when the worker is in it, else the worker's own when it leads one; None: the
    worker alone (and always on Windows). ``processes.Target`` never signals its caller's
    own group, whatever this returns."""
    leader = launch.pid if launch is not None else worker.pid
    return leader if processes.group_of(worker.pid) == leader else None
