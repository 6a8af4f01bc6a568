"""QuickEdit off while a crawlguard command runs in a Windows console.

Why: in a console with QuickEdit on, selecting text with the mouse stops every
write to the console until a key is pressed (conhost blocks the writer). Any
thread of any process attached to that console that writes then stops: ``run``
prints its events from the main thread, and the sidecar, the exporter and
``up`` log to stderr from whichever thread logs, so a selection would stop the
supervisor relaunching and the sidecar's HTTP thread carrying out rungs.

So every ``crawlguard`` command switches QuickEdit off on the console it is
attached to for as long as it runs (``quick_edit_off``): ``SetConsoleMode`` on
the console's *input* buffer, without ENABLE_QUICK_EDIT_MODE and with
ENABLE_EXTENDED_FLAGS, which the console requires for the change to take
effect (Microsoft, "SetConsoleMode"). The buffer is opened as ``CONIN$``, so
it is found even when standard input is redirected. On exit the mode is put
back, but only if it is still the one we set: a console shared with another
process that changed it meanwhile is left as that process wants it. A process
with no console (a service, output to files) has nothing to change. Windows
Terminal has no QuickEdit mode: a selection there does not block writers.

Every OS call goes through ``ConsoleApi``; ``Kernel32Console`` is the real one
(ctypes, like ``winjob``), tests substitute a fake at exactly this boundary.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator
from typing import Protocol

from .seam import Seam

ENABLE_QUICK_EDIT_MODE = 0x0040
ENABLE_EXTENDED_FLAGS = 0x0080
GENERIC_READ = 0x80000000
GENERIC_WRITE = 0x40000000
FILE_SHARE_READ = 0x1
FILE_SHARE_WRITE = 0x2
OPEN_EXISTING = 3


class ConsoleApi(Protocol):
    def open_input(self) -> int | None:
        """A handle to this process's console input buffer (``CONIN$``); None without one."""

    def get_mode(self, handle: int) -> int | None:
        """Its mode; None when the handle is no console."""

    def set_mode(self, handle: int, mode: int) -> bool: ...

    def close(self, handle: int) -> None: ...


class Kernel32Console:
    """The real API. Only constructed on Windows (ctypes.WinDLL exists only there)."""

    def __init__(self) -> None:
        k = self._k = getattr(ctypes, "WinDLL")("kernel32", use_last_error=True)  # noqa: B009
        vp, u32 = ctypes.c_void_p, ctypes.c_uint32
        k.CreateFileW.argtypes = [ctypes.c_wchar_p, u32, u32, vp, u32, u32, vp]
        k.CreateFileW.restype = vp
        k.GetConsoleMode.argtypes = [vp, ctypes.POINTER(u32)]
        k.SetConsoleMode.argtypes = [vp, u32]
        k.CloseHandle.argtypes = [vp]

    def open_input(self) -> int | None:
        handle = self._k.CreateFileW("CONIN$", GENERIC_READ | GENERIC_WRITE,
                                     FILE_SHARE_READ | FILE_SHARE_WRITE, None, OPEN_EXISTING,
                                     0, None)
        if handle in (None, ctypes.c_void_p(-1).value):
            return None
        return int(handle)

    def get_mode(self, handle: int) -> int | None:
        mode = ctypes.c_uint32()
        if not self._k.GetConsoleMode(handle, ctypes.byref(mode)):
            return None
        return int(mode.value)

    def set_mode(self, handle: int, mode: int) -> bool:
        return bool(self._k.SetConsoleMode(handle, mode))

    def close(self, handle: int) -> None:
        self._k.CloseHandle(handle)


_seam: Seam[ConsoleApi] = Seam(Kernel32Console)
api = _seam.get
"""The process-wide API (tests replace it with ``set_api``)."""
set_api = _seam.set
"""Install another API (None: the real one on next use); returns the previous one."""


@contextlib.contextmanager
def quick_edit_off() -> Iterator[bool]:
    """Meanwhile QuickEdit is off on this process's console (Windows); yields whether
    it was on and we switched it off. Nothing happens elsewhere or without a console."""
    if sys.platform != "win32":
        yield False
        return
    con = api()
    handle = con.open_input()
    if handle is None:
        yield False
        return
    try:
        before = con.get_mode(handle)
        ours = None
        if before is not None and before & ENABLE_QUICK_EDIT_MODE:
            ours = (before | ENABLE_EXTENDED_FLAGS) & ~ENABLE_QUICK_EDIT_MODE
            if not con.set_mode(handle, ours):
                ours = None
        try:
            yield ours is not None
        finally:
            if before is not None and ours is not None and con.get_mode(handle) == ours:
                con.set_mode(handle, before | ENABLE_EXTENDED_FLAGS)
    finally:
        con.close(handle)
