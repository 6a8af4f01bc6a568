"""The run record: which children a run started, so the next run can stop leftovers.

``up`` writes ``<state>/run/children.json`` each time it starts or loses a child
(sidecar, Prometheus, Alertmanager, workers): name, pid and creation time, the
identity that survives pid reuse. A run that ends normally leaves it empty. A run
that died hard (kill -9, the OOM killer) leaves it listing what it had; the
parent-death signal and the Windows Job Object end those children, but not what
ignores SIGTERM or what a launcher started below them (Linux). So the next ``up``,
once it holds the state dir's lock, calls ``sweep``: every entry still alive AND
still the same process (pid plus creation time) is stopped with its process group
(POSIX) or its Job Object (Windows); a reused pid is never touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from crawlguard.kernel import winjob
from crawlguard.kernel.errors import CrawlguardError, ProcessError
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.statedir import read_json, write_json_atomic
from crawlguard.kernel.workers import WorkerIdentity

log = get_logger(__name__)


@dataclass(frozen=True)
class Child:
    name: str
    pid: int
    create_time: float

    @property
    def identity(self) -> WorkerIdentity:
        return WorkerIdentity(self.pid, self.create_time)


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
            self._children[pid] = Child(name, ident.pid, ident.create_time)
            self._write()

    def discard(self, pid: int) -> None:
        with self._lock:
            if self._children.pop(pid, None) is not None:
                self._write()

    def _write(self) -> None:
        try:
            write_json_atomic(self.path, {"pid": os.getpid(), "children": [
                asdict(c) for c in self._children.values()]})
        except CrawlguardError as exc:
            log.error("run record not updated: %s", exc)


def read(path: Path) -> list[Child]:
    try:
        data = read_json(path)
        return [] if data is None else [
            Child(str(c["name"]), int(c["pid"]), float(c["create_time"]))
            for c in data["children"]]
    except (CrawlguardError, KeyError, TypeError, ValueError) as exc:
        log.warning("run record %s unreadable (%s); nothing swept", path, exc)
        return []


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
    if sys.platform == "win32":
        if status != "alive":
            return None
        if not winjob.api().terminate_named(winjob.job_name(child.identity.key)):
            with contextlib.suppress(psutil.Error):
                psutil.Process(child.pid).kill()
        return f"stopped leftover {child.name} (pid {child.pid}) of a previous run"
    if status == "reused":
        return None
    if status == "alive" and _pgid(child.pid) != child.pid:
        # It left the group we gave it: it alone is what we know to be ours.
        with contextlib.suppress(psutil.Error):
            psutil.Process(child.pid).kill()
        return f"stopped leftover {child.name} (pid {child.pid}) of a previous run"
    # The group outlives its leader while any member runs, and a pgid is never handed
    # out again while the group exists: signalling it reaches only our leftovers.
    if not _group_exists(child.pid):
        return None
    _signal_group(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_exists(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _group_exists(child.pid):
        _signal_group(child.pid, signal.SIGKILL)
    return f"stopped leftover {child.name} (process group {child.pid}) of a previous run"


def _pgid(pid: int) -> int | None:
    if sys.platform == "win32":
        return None
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _group_exists(pgid: int) -> bool:
    if sys.platform == "win32":
        return False
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    if sys.platform == "win32":
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
