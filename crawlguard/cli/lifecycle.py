"""Signal handling for the long-running commands, in one context manager.

``shutdown_on_signals()`` turns SIGINT/SIGTERM (and CTRL_BREAK_EVENT, which
Python sees as SIGBREAK, on Windows) into a ``StopEvent`` (a ``threading.Event``
that a handler can set without taking a lock) that the
command's main loop waits on; the previous handlers are restored on exit so
tests can run commands in-process. ``hangup=True`` (``up`` and ``run``) adds
SIGHUP on POSIX: a closed terminal or SSH session stops them like SIGTERM, so
their children are stopped too instead of being orphaned.

Waits on the main thread are always timed, in slices of ``SLICE_S``: on Windows
before Python 3.14 an untimed ``Event.wait()`` or lock acquire cannot be
interrupted, so a Ctrl+C or CTRL_BREAK handler would never run (CPython issue
80116). ``wait_for_stop`` is that wait; tests/sidecar/test_main_thread_waits.py
checks that no untimed wait is left in the modules that run on the main thread.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from crawlguard.kernel.stopevent import SLICE_S, StopEvent

__all__ = ["shutdown_on_signals", "wait_for_stop"]

HANDLED: list[int] = [signal.SIGINT, signal.SIGTERM]
if hasattr(signal, "SIGBREAK"):  # Windows: CTRL_BREAK_EVENT to our process group
    HANDLED.append(signal.SIGBREAK)


def wait_for_stop(stop: threading.Event) -> None:
    """Block until ``stop`` is set, in timed slices so signal handlers keep running."""
    while not stop.wait(SLICE_S):
        pass


@contextmanager
def shutdown_on_signals(event: StopEvent | None = None,
                        hangup: bool = False) -> Iterator[StopEvent]:
    stop = event or StopEvent()
    if threading.current_thread() is not threading.main_thread():
        # Signal handlers can only be installed from the main thread.
        yield stop
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.request()  # never stop.set() here: see StopEvent

    signals = list(HANDLED)
    sigbreak = getattr(signal, "SIGBREAK", None)  # read now: tests model it off Windows
    if sigbreak is not None and sigbreak not in signals:
        signals.append(sigbreak)
    if hangup and hasattr(signal, "SIGHUP"):
        signals.append(signal.SIGHUP)
    for sig in signals:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
