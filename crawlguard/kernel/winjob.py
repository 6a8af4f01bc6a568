"""Windows Job Objects: one per child, so that a hard kill ends the child's whole tree
and nothing outlives the supervisor.

Why: ``TerminateProcess`` ends one process, not its children (Microsoft, "Terminating
a Process"). A worker started through a venv's ``Scripts\\python.exe``, ``uv run``,
``conda run`` or a ``.bat`` is a child of what the supervisor launched, so killing
the launch alone would leave the real worker running, holding GPU memory, next to
its relaunched successor. Every process created inside a job stays in it, so
``TerminateJobObject`` ends them all; and ``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE``
ends them when the last handle closes, which is what happens when the supervisor
dies however it dies (killed, a closed console, logoff).

The child is created suspended (``CREATE_SUSPENDED``), put in its job, then
resumed (``crawlguard.supervisor.childproc``), so it cannot start a grandchild
before it is in the job. Each job is
named after its launch's identity (``Local\\crawlguard-<pid>-<ms>``) so that the
sidecar, which did not create it, can open and terminate it for a rung's hard kill.

Every OS call goes through ``JobApi``; ``Kernel32Jobs`` is the real one (ctypes),
tests substitute a fake at exactly this boundary.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Protocol

from .seam import Seam

CREATE_SUSPENDED = 0x00000004
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9
JOB_OBJECT_TERMINATE = 0x0008
THREAD_SUSPEND_RESUME = 0x0002
KILLED_EXIT_CODE = 1
"""The exit code every process of a terminated job gets (TerminateProcess's convention)."""


def job_name(launch_key: str) -> str:
    """The job of the launch whose ``WorkerIdentity.key`` is ``launch_key``."""
    return f"Local\\crawlguard-{launch_key}"


class JobApi(Protocol):
    def create(self, name: str) -> int:
        """A new named job with kill-on-close set; returns its handle."""

    def assign(self, job: int, process_handle: int) -> None: ...

    def resume(self, pid: int, thread_ids: Sequence[int]) -> None:
        """Resume the threads of ``pid``, a process created with CREATE_SUSPENDED."""

    def terminate(self, job: int) -> None: ...

    def terminate_named(self, name: str) -> bool:
        """Terminate the job called ``name``; False when no such job exists."""

    def close(self, job: int) -> None: ...


class _IoCounters(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
        "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]


class _BasicLimits(ctypes.Structure):
    _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64),
                ("PerJobUserTimeLimit", ctypes.c_int64),
                ("LimitFlags", ctypes.c_uint32),
                ("MinimumWorkingSetSize", ctypes.c_size_t),
                ("MaximumWorkingSetSize", ctypes.c_size_t),
                ("ActiveProcessLimit", ctypes.c_uint32),
                ("Affinity", ctypes.c_size_t),
                ("PriorityClass", ctypes.c_uint32),
                ("SchedulingClass", ctypes.c_uint32)]


class _ExtendedLimits(ctypes.Structure):
    _fields_ = [("BasicLimitInformation", _BasicLimits),
                ("IoInfo", _IoCounters),
                ("ProcessMemoryLimit", ctypes.c_size_t),
                ("JobMemoryLimit", ctypes.c_size_t),
                ("PeakProcessMemoryUsed", ctypes.c_size_t),
                ("PeakJobMemoryUsed", ctypes.c_size_t)]


class Kernel32Jobs:
    """The real API. Only constructed on Windows (ctypes.WinDLL exists only there)."""

    def __init__(self) -> None:
        k = getattr(ctypes, "WinDLL")("kernel32", use_last_error=True)  # noqa: B009
        self._k = k
        self._last_error = getattr(ctypes, "get_last_error")  # noqa: B009
        for fn, restype in (("CreateJobObjectW", ctypes.c_void_p),
                            ("OpenJobObjectW", ctypes.c_void_p),
                            ("OpenThread", ctypes.c_void_p)):
            getattr(k, fn).restype = restype
        k.CreateJobObjectW.argtypes = [ctypes.c_void_p, ctypes.c_wchar_p]
        k.OpenJobObjectW.argtypes = [ctypes.c_uint32, ctypes.c_int, ctypes.c_wchar_p]
        k.OpenThread.argtypes = [ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32]
        k.SetInformationJobObject.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                              ctypes.c_uint32]
        k.AssignProcessToJobObject.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        k.TerminateJobObject.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        k.ResumeThread.argtypes = [ctypes.c_void_p]
        k.ResumeThread.restype = ctypes.c_uint32
        k.CloseHandle.argtypes = [ctypes.c_void_p]

    def _fail(self, what: str) -> OSError:
        code = int(self._last_error())
        return OSError(code, f"{what} failed (Windows error {code})")

    def create(self, name: str) -> int:
        job = self._k.CreateJobObjectW(None, name)
        if not job:
            raise self._fail("CreateJobObjectW")
        info = _ExtendedLimits()
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not self._k.SetInformationJobObject(job, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
                                               ctypes.byref(info), ctypes.sizeof(info)):
            err = self._fail("SetInformationJobObject")
            self._k.CloseHandle(job)
            raise err
        return int(job)

    def assign(self, job: int, process_handle: int) -> None:
        if not self._k.AssignProcessToJobObject(job, process_handle):
            raise self._fail("AssignProcessToJobObject")

    def resume(self, pid: int, thread_ids: Sequence[int]) -> None:
        for thread in thread_ids:
            handle = self._k.OpenThread(THREAD_SUSPEND_RESUME, 0, thread)
            if not handle:
                raise self._fail("OpenThread")
            try:
                if self._k.ResumeThread(handle) == 0xFFFFFFFF:
                    raise self._fail("ResumeThread")
            finally:
                self._k.CloseHandle(handle)

    def terminate(self, job: int) -> None:
        if not self._k.TerminateJobObject(job, KILLED_EXIT_CODE):
            raise self._fail("TerminateJobObject")

    def terminate_named(self, name: str) -> bool:
        job = self._k.OpenJobObjectW(JOB_OBJECT_TERMINATE, 0, name)
        if not job:
            return False
        try:
            self.terminate(int(job))
        finally:
            self._k.CloseHandle(job)
        return True

    def close(self, job: int) -> None:
        self._k.CloseHandle(job)


_seam: Seam[JobApi] = Seam(Kernel32Jobs)
api = _seam.get
"""The process-wide API (tests replace it with ``set_api``)."""
set_api = _seam.set
"""Install another API (None: the real one on next use); returns the previous one."""

