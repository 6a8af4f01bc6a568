"""Windows faked at the OS boundary, for the tests that run its branches on POSIX.

A pytest plugin (tests/conftest.py loads it): the fixtures ``windows``,
``no_break``, ``jobs``, ``procs`` and ``acl``, and the fakes behind them. What is
faked is exactly what crawlguard asks of Windows: ``sys.platform``, the Job
Object API (``winjob``), the process-handle API (``winproc``), the security
descriptor API (``winacl``), and ``os.kill`` for
CTRL_BREAK_EVENT, which is recorded, not delivered. Real POSIX processes stand
in for the Windows ones. Everything is imported before the platform is faked:
filelock imports msvcrt at import time on win32.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psutil
import pytest

from crawlguard.kernel import winacl, winjob, winproc

CTRL_BREAK = 1  # signal.CTRL_BREAK_EVENT's value on Windows
HANDLE_BASE = 1_000_000
"""A fake Popen's ``_handle`` is HANDLE_BASE + its pid."""


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(signal, "CTRL_BREAK_EVENT", CTRL_BREAK, raising=False)
    monkeypatch.setattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200, raising=False)


class FakeJobs:
    """Job Objects at the OS boundary: a job holds the processes assigned to it and
    everything they start (modelled as their descendants when it is terminated)."""

    def __init__(self, fail_create: bool = False) -> None:
        self.fail_create = fail_create
        self.fail_resume = False
        self.calls: list[tuple[str, Any]] = []
        self.jobs: dict[int, tuple[str, set[int]]] = {}
        self.on_call: list[tuple[str, Any]] | None = None
        """Another log every call is also appended to (to check order across APIs)."""

    def _note(self, call: tuple[str, Any]) -> None:
        self.calls.append(call)
        if self.on_call is not None:
            self.on_call.append(call)

    def create(self, name: str) -> int:
        self._note(("create", name))
        if self.fail_create:
            raise OSError(5, "access denied")
        handle = 100 + len(self.jobs)
        self.jobs[handle] = (name, set())
        return handle

    def assign(self, job: int, process_handle: int) -> None:
        self._note(("assign", process_handle))
        self.jobs[job][1].add(process_handle - HANDLE_BASE)

    def resume(self, pid: int, thread_ids: Sequence[int]) -> None:
        assert thread_ids, "a process has at least one thread"
        self._note(("resume", pid))
        if self.fail_resume:
            raise OSError(5, "access denied")

    def terminate(self, job: int) -> None:
        self._note(("terminate", job))
        procs = []
        for pid in self.jobs[job][1]:
            try:
                root = psutil.Process(pid)
                procs += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue

    def terminate_named(self, name: str) -> bool:
        for handle, (job_name, _) in self.jobs.items():
            if job_name == name:
                self.terminate(handle)
                return True
        return False

    def close(self, job: int) -> None:
        self._note(("close", job))
        if job in self.jobs:
            self.terminate(job)  # kill-on-close
        self.jobs.pop(job, None)


def _exited(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class FakeProcesses:
    """Process handles at the OS boundary (``winproc.ProcessApi``), backed by real POSIX
    processes. Every call is recorded, with the handle's pid, in ``calls`` (and in
    ``on_call`` when set). A handle does not pin the pid here, which is the OS's
    promise on Windows; what the tests check is that crawlguard asks for it, when,
    and that it uses the handle, never the pid, from then on. Waits never reap (the
    test, or the Popen, is the parent)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.on_call: list[tuple[str, Any]] | None = None
        self.handles: dict[int, psutil.Process] = {}
        self.closed: set[int] = set()
        self.exit_codes: dict[int, int] = {}
        """pid -> the exit status ``exit_code`` reports once the process has exited."""
        self.deny: set[int] = set()
        """pids whose ``open`` fails with access denied."""
        self._next = 7000

    def _note(self, name: str, value: Any) -> None:
        self.calls.append((name, value))
        if self.on_call is not None:
            self.on_call.append((name, value))

    def _proc(self, handle: int) -> psutil.Process:
        assert handle in self.handles and handle not in self.closed, "a closed handle used"
        return self.handles[handle]

    def open(self, pid: int) -> int | None:
        self._note("open", pid)
        if pid in self.deny:
            raise OSError(5, "access denied")
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return None
        self._next += 4
        self.handles[self._next] = proc
        return self._next

    def created(self, handle: int) -> float:
        proc = self._proc(handle)
        self._note("created", proc.pid)
        return proc.create_time()

    def wait(self, handle: int, timeout: float) -> bool:
        proc = self._proc(handle)
        self._note("wait", proc.pid)
        deadline = time.monotonic() + timeout
        while not _exited(proc):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def exit_code(self, handle: int) -> int | None:
        proc = self._proc(handle)
        self._note("exit_code", proc.pid)
        return self.exit_codes.get(proc.pid) if _exited(proc) else None

    def terminate(self, handle: int, code: int) -> None:
        proc = self._proc(handle)
        self._note("terminate", proc.pid)
        try:
            proc.kill()
        except psutil.NoSuchProcess as exc:
            raise OSError(5, "access denied") from exc

    def close(self, handle: int) -> None:
        proc = self._proc(handle)
        self._note("close", proc.pid)
        self.closed.add(handle)

    @property
    def open_handles(self) -> list[int]:
        return [h for h in self.handles if h not in self.closed]


class PosixPopen(subprocess.Popen):  # type: ignore[type-arg]
    """The real Popen with Windows' creation flags set aside (Linux refuses them)."""

    def __init__(self, args: Any, **kwargs: Any) -> None:
        self.creationflags = kwargs.pop("creationflags", 0)
        super().__init__(args, start_new_session=True, **kwargs)
        self._handle = HANDLE_BASE + self.pid


@pytest.fixture
def no_break(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """os.kill records CTRL_BREAK_EVENT (this is not Windows) and delivers the rest."""
    calls: list[tuple[int, int]] = []
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        calls.append((pid, sig))
        if sig != CTRL_BREAK:
            real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", kill)
    return calls


F = TypeVar("F")


@contextlib.contextmanager
def installed(set_api: Callable[[Any], Any], fake: F) -> Iterator[F]:
    """Meanwhile ``fake`` is the API of one Windows boundary (``winjob.set_api`` ...)."""
    old = set_api(fake)
    try:
        yield fake
    finally:
        set_api(old)


@pytest.fixture
def procs(windows: None) -> Iterator[FakeProcesses]:
    with installed(winproc.set_api, FakeProcesses()) as fake:
        yield fake
    assert not fake.open_handles, "every handle crawlguard opened is closed again"


@pytest.fixture
def jobs(windows: None, no_break: list[tuple[int, int]], procs: FakeProcesses,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeJobs]:
    monkeypatch.setattr(subprocess, "Popen", PosixPopen)
    with installed(winjob.set_api, FakeJobs()) as fake:
        yield fake


USER_SID = "S-1-5-21-1004336348-1177238915-682003330-1001"
"""The user the faked Windows runs as."""
PROGRAMDATA_SDDL = (
    "O:SYD:(A;OICIID;FA;;;SY)(A;OICIID;FA;;;BA)(A;OICIIOID;GA;;;CO)"
    "(A;OICIID;0x1200a9;;;BU)(A;CIID;DCLCRPCR;;;BU)")
"""What a folder under %ProgramData% inherits (icacls: Users may create files and
folders): the finding of issue 20."""


class FakeAcl:
    """Security descriptors at the OS boundary (``winacl.AclApi``): the real files are
    made (POSIX modes aside) and the descriptor each creating call carried is kept,
    so the tests see exactly what crawlguard asked for and when."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.sddl: dict[str, str] = {}
        """path -> its owner and DACL as read back (set by create_*, or by the test)."""

    def user_sid(self) -> str:
        return USER_SID

    def create_directory(self, path: str, sddl: str) -> None:
        os.mkdir(path)  # FileExistsError as CreateDirectoryW's ERROR_ALREADY_EXISTS
        self.calls.append(("create_directory", path, sddl))
        self.sddl[path] = f"O:{USER_SID}" + sddl

    def create_file(self, path: str, sddl: str) -> int:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        self.calls.append(("create_file", path, sddl))
        self.sddl[path] = f"O:{USER_SID}" + sddl
        return fd

    def read_sddl(self, path: str) -> str:
        self.calls.append(("read_sddl", path, ""))
        if path not in self.sddl:
            raise FileNotFoundError(2, "The system cannot find the file specified", path)
        return self.sddl[path]


@pytest.fixture
def acl(windows: None) -> Iterator[FakeAcl]:
    with installed(winacl.set_api, FakeAcl()) as fake:
        yield fake
