"""Windows process handles: what pins a pid from the identity check to the signal.

Why: Windows hands a pid out again only once no handle to the process that had
it is open (Microsoft, "Process Handles and Identifiers"). A rung that checks a
worker's identity (pid AND creation time) and then signals by pid leaves a gap
in which the pid can change hands; a CTRL_BREAK_EVENT sent to a recycled pid
that leads no process group reaches every process on the console (Windows
Terminal issue #335), ``up`` included. So ``crawlguard.kernel.processes``
opens a handle first (``OpenProcess`` with SYNCHRONIZE |
PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_TERMINATE), compares the creation
time read *through that handle* (``GetProcessTimes``) with the recorded one,
and keeps the handle open until the break is sent, the wait is over and the
hard kill (``TerminateProcess`` on the handle, never on the pid) is done.

Every OS call goes through ``ProcessApi``; ``Kernel32Processes`` is the real
one (ctypes, like ``winjob``: no import-time dependency and every call visible
to the tests), which substitute a fake at exactly this boundary.
"""

from __future__ import annotations

import ctypes
from typing import Protocol

from .seam import Seam

SYNCHRONIZE = 0x00100000
PROCESS_QUERY_LIMITED_INFORMATION = 0x00001000
PROCESS_TERMINATE = 0x00000001
PIN_ACCESS = SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_TERMINATE
"""Wait on it, read its times and exit code, terminate it: nothing more."""
NORMAL_PRIORITY_CLASS = 0x00000020
"""CreateProcess flag. Without a class flag a child of a BELOW_NORMAL or IDLE parent
(a Scheduled Task's default priority 7 is BELOW_NORMAL) gets its parent's class."""
STATUS_CONTROL_C_EXIT = 0xC000013A
"""The exit status of a process that a console control event ended with no handler."""
ERROR_INVALID_PARAMETER = 87
WAIT_OBJECT_0 = 0x0
WAIT_TIMEOUT = 0x102
FILETIME_UNIX_EPOCH = 116444736000000000
"""1970-01-01 in FILETIME units (100 ns since 1601-01-01)."""


def filetime_to_unix(filetime: int) -> float:
    """A FILETIME as Unix seconds, as psutil reports a creation time."""
    return (filetime - FILETIME_UNIX_EPOCH) / 1e7


class ProcessApi(Protocol):
    def open(self, pid: int) -> int | None:
        """A handle with ``PIN_ACCESS``; None when no process has ``pid``; OSError when
        it cannot be opened (access denied)."""

    def created(self, handle: int) -> float:
        """The creation time of the process, Unix seconds."""

    def wait(self, handle: int, timeout: float) -> bool:
        """True once the process has exited, False after ``timeout`` seconds."""

    def exit_code(self, handle: int) -> int | None:
        """Its exit status (unsigned); None while it runs."""

    def terminate(self, handle: int, code: int) -> None: ...

    def close(self, handle: int) -> None: ...


class _Kernel32:
    """kernel32 through ctypes; only constructed on Windows (ctypes.WinDLL exists only there)."""

    def __init__(self) -> None:
        self.k = getattr(ctypes, "WinDLL")("kernel32", use_last_error=True)  # noqa: B009
        self._last_error = getattr(ctypes, "get_last_error")  # noqa: B009

    def fail(self, what: str) -> OSError:
        code = int(self._last_error())
        return OSError(code, f"{what} failed (Windows error {code})")

    def last_error(self) -> int:
        return int(self._last_error())


class Kernel32Processes:
    def __init__(self) -> None:
        self._w = _Kernel32()
        k = self._w.k
        k.OpenProcess.restype = ctypes.c_void_p
        k.OpenProcess.argtypes = [ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32]
        times = ctypes.POINTER(ctypes.c_uint64)  # FILETIME: two DWORDs, low first
        k.GetProcessTimes.argtypes = [ctypes.c_void_p, times, times, times, times]
        k.WaitForSingleObject.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        k.WaitForSingleObject.restype = ctypes.c_uint32
        k.GetExitCodeProcess.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
        k.TerminateProcess.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        k.CloseHandle.argtypes = [ctypes.c_void_p]

    def open(self, pid: int) -> int | None:
        handle = self._w.k.OpenProcess(PIN_ACCESS, 0, pid)
        if handle:
            return int(handle)
        if self._w.last_error() == ERROR_INVALID_PARAMETER:
            return None  # no process has this pid
        raise self._w.fail(f"OpenProcess({pid})")

    def created(self, handle: int) -> float:
        created, exited, kernel, user = (ctypes.c_uint64() for _ in range(4))
        if not self._w.k.GetProcessTimes(handle, ctypes.byref(created), ctypes.byref(exited),
                                         ctypes.byref(kernel), ctypes.byref(user)):
            raise self._w.fail("GetProcessTimes")
        return filetime_to_unix(created.value)

    def wait(self, handle: int, timeout: float) -> bool:
        ms = min(int(max(0.0, timeout) * 1000), 0xFFFFFFFE)  # never INFINITE
        result = self._w.k.WaitForSingleObject(handle, ms)
        if result == WAIT_OBJECT_0:
            return True
        if result == WAIT_TIMEOUT:
            return False
        raise self._w.fail("WaitForSingleObject")

    def exit_code(self, handle: int) -> int | None:
        if not self.wait(handle, 0):
            return None  # STILL_ACTIVE (259) could also be a real exit code
        code = ctypes.c_uint32()
        if not self._w.k.GetExitCodeProcess(handle, ctypes.byref(code)):
            raise self._w.fail("GetExitCodeProcess")
        return int(code.value)

    def terminate(self, handle: int, code: int) -> None:
        if not self._w.k.TerminateProcess(handle, code):
            raise self._w.fail("TerminateProcess")

    def close(self, handle: int) -> None:
        self._w.k.CloseHandle(handle)


_seam: Seam[ProcessApi] = Seam(Kernel32Processes)
api = _seam.get
"""The process-wide API (tests replace it with ``set_api``)."""
set_api = _seam.set
"""Install another API (None: the real one on next use); returns the previous one."""
