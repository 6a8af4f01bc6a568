"""A stop request that a signal handler may raise, and waits that signals can interrupt.

Used by every long-running command (``crawlguard.cli.lifecycle``) and by the reference
rebuild's worker (``crawlguard.refbuild.worker``).
"""

from __future__ import annotations

import threading
import time

SLICE_S = 0.2
"""Longest uninterruptible wait on the main thread: the delay before Ctrl+C is seen.
On Windows before Python 3.14 an untimed wait cannot be interrupted at all."""


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
