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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

HANDLED: list[int] = [signal.SIGINT, signal.SIGTERM]
if hasattr(signal, "SIGBREAK"):  # Windows: CTRL_BREAK_EVENT to our process group
    HANDLED.append(signal.SIGBREAK)
SLICE_S = 0.2
"""Longest uninterruptible wait on the main thread: the delay before Ctrl+C is seen."""


class StopEvent(threading.Event):
    """The stop request: a ``threading.Event`` that a signal handler may set.

    ``Event.set()`` takes the event's lock. A handler runs on the main thread
    between two bytecodes, possibly while that very thread holds the lock inside
    ``Event.wait``; ``set()`` there deadlocks the process for good (seen here: a
    sidecar stuck on a futex after SIGTERM). So the handler only flips a flag
    (``request``), and the locking ``set()`` happens in ordinary code, the next
    time anyone asks (``is_set``, or a ``wait`` slice)."""

    def __init__(self) -> None:
        super().__init__()
        self._requested = False

    def request(self) -> None:
        """Async-signal-safe: no lock, no allocation beyond a bool."""
        self._requested = True

    def is_set(self) -> bool:
        if self._requested and not super().is_set():
            self.set()
        return super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = SLICE_S if deadline is None else min(SLICE_S, deadline - time.monotonic())
            if left <= 0:
                return False
            super().wait(left)
        return True


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
