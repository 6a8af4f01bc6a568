"""The run record: which children a run started, so the next run can stop leftovers.

``up`` writes ``<state>/run/children.json`` each time it starts or loses a child
(sidecar, Prometheus, Alertmanager, workers): name, pid and creation time, the
identity that survives pid reuse. A run that ends normally leaves it empty. A run
that died hard (kill -9, the OOM killer) leaves it listing what it had; the
parent-death signal and the Windows Job Object end those children, but not what
ignores SIGTERM or what a launcher started below them (Linux). So the next ``up``,
once it holds the state dir's lock, calls ``sweep``: every entry still alive AND
still the same process (pid plus creation time) is stopped with its process group
(POSIX) or its Job Object (Windows), the one way crawlguard stops a process
(``crawlguard.kernel.processes.stop``); a reused pid is never touched.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

from pydantic import Field

from crawlguard.kernel import processes, winjob
from crawlguard.kernel.errors import CrawlguardError, ProcessError
from crawlguard.kernel.formats.schema import Pid, StateModel, read_file
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.statedir import write_json_atomic
from crawlguard.kernel.workers import ProcessRecord, WorkerIdentity

log = get_logger(__name__)


class Child(ProcessRecord):
    name: str


class RunFile(StateModel):
    """The schema of ``run/children.json``."""

    pid: Pid
    """The process that wrote it (``up``)."""
    children: list[Child] = Field(default_factory=list)


class RunRecord:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._children: dict[int, Child] = {}
        self._lock = threading.Lock()

    def add(self, name: str, pid: int) -> None:
        try:
            ident = WorkerIdentity.of_pid(pid)
        except ProcessError:
            return  # already gone: nothing to leave behind
        with self._lock:
            self._children[pid] = Child(name=name, pid=ident.pid,
                                        create_time=ident.create_time)
            self._write()

    def discard(self, pid: int) -> None:
        with self._lock:
            if self._children.pop(pid, None) is not None:
                self._write()

    def _write(self) -> None:
        try:
            write_json_atomic(self.path, RunFile(pid=os.getpid(), children=list(
                self._children.values())).model_dump(mode="json"))
        except CrawlguardError as exc:
            log.error("run record not updated: %s", exc)


def read(path: Path) -> list[Child]:
    try:
        run = read_file(RunFile, path, "a run record")
    except CrawlguardError as exc:
        log.warning("%s; nothing swept", exc)
        return []
    return [] if run is None else list(run.children)


def sweep(path: Path, grace: float) -> list[str]:
    """Stop the leftovers of a previous run; returns one line per process stopped."""
    notes = []
    for child in read(path):
        note = _stop(child, grace)
        if note:
            notes.append(note)
    with contextlib.suppress(OSError):
        path.unlink()
    return notes


def _stop(child: Child, grace: float) -> str | None:
    try:
        status = child.identity.status()
    except ProcessError:
        return None  # cannot tell who it is: never signal
    if status == "reused" or (status == "gone" and sys.platform == "win32"):
        return None
    if sys.platform == "win32":
        # The job holds what it started; no console group of a dead run is ours to break.
        target = processes.Target(child.pid, job=winjob.job_name(child.identity.key))
        what = f"pid {child.pid}"
    elif status == "alive" and processes.group_of(child.pid) != child.pid:
        # It left the group we gave it: it alone is what we know to be ours.
        target = processes.Target(child.pid)
        what = f"pid {child.pid}"
    elif processes.group_alive(child.pid):
        # The group outlives its leader while any member runs, and a pgid is never handed
        # out again while the group exists: signalling it reaches only our leftovers.
        target = processes.Target(child.pid, group=child.pid, whole_group=True)
        what = f"process group {child.pid}"
    else:
        return None
    with target:
        if status == "alive" and target.pin(child.create_time) != "ok":
            return None
        processes.stop(target, grace)
    return f"stopped leftover {child.name} ({what}) of a previous run"
