"""Writing to the console from a thread of its own.

A Windows console in QuickEdit mode stops every write to it while a person has
text selected, until a key is pressed; a closed terminal on POSIX makes writes
fail with EIO. Either would stop whoever writes. ``up``'s live view is fed by
the supervisor's thread, so a blocked write there would stop relaunching workers.
``ConsoleWriter`` is a text stream whose ``write`` only queues: its own thread
does the blocking writes, drops output once the console is gone, and drops the
oldest pending text when a selection holds the console for long.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import TextIO

MAX_PENDING = 10_000
"""Chunks kept while the console does not accept writes (a redraw is a few chunks)."""


class ConsoleWriter:
    def __init__(self, stream: TextIO, name: str = "crawlguard-console") -> None:
        self.stream = stream
        self._queue: queue.Queue[str | None] = queue.Queue(MAX_PENDING)
        self._broken = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (OSError, ValueError):
            return False

    def write(self, text: str) -> int:
        if not self._broken:
            try:
                self._queue.put_nowait(text)
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
                with contextlib.suppress(queue.Full):
                    self._queue.put_nowait(text)
        return len(text)

    def flush(self) -> None:
        """Nothing to do here: the writer thread flushes after each chunk."""

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (up to ``timeout`` seconds), then stop the thread."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            text = self._queue.get()
            if text is None:
                return
            if self._broken:
                continue
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                self._broken = True  # the console is gone (hangup, closed window)
