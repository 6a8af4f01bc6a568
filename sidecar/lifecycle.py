"""Signal handling for the long-running commands, in one context manager.

``shutdown_on_signals()`` turns SIGINT/SIGTERM (and CTRL_BREAK_EVENT, which
Python sees as SIGBREAK, on Windows) into a ``threading.Event`` that the
command's main loop waits on; the previous handlers are restored on exit so
tests can run commands in-process.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

HANDLED: list[int] = [signal.SIGINT, signal.SIGTERM]
if hasattr(signal, "SIGBREAK"):  # Windows: CTRL_BREAK_EVENT to our process group
    HANDLED.append(signal.SIGBREAK)


@contextmanager
def shutdown_on_signals(event: threading.Event | None = None) -> Iterator[threading.Event]:
    stop = event or threading.Event()
    if threading.current_thread() is not threading.main_thread():
        # Signal handlers can only be installed from the main thread.
        yield stop
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in HANDLED:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
