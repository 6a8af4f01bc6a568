"""The last lines a worker wrote, for a worker that died before doing any work.

A worker that fails at import (a typo, a missing package, a bad path) exits in
a second with its traceback in ``<log_dir>/<shard>.log``, where nobody looks;
``up`` prints these lines under the exit event instead.
"""

from __future__ import annotations

from pathlib import Path

MAX_LINES = 12
MAX_BYTES = 8192


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def tail(path: Path, since: int = 0, lines: int = MAX_LINES,
         max_bytes: int = MAX_BYTES) -> list[str]:
    """Up to ``lines`` last lines written to ``path`` after offset ``since``."""
    try:
        with open(path, "rb") as fh:
            end = fh.seek(0, 2)
            start = max(since, end - max_bytes)
            fh.seek(start)
            data = fh.read(end - start)
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    if start > since and text:
        text = text[1:]  # the first line was cut in the middle
    return [line.rstrip() for line in text if line.strip()][-lines:]
