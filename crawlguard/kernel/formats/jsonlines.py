"""Reading JSON-lines files that are being appended to, or were cut by a crash."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from crawlguard.kernel.errors import StateError

T = TypeVar("T")


def iter_objects(path: Path) -> Iterator[dict[str, Any] | None]:
    """Each line of ``path`` as a dict, or ``None`` for a line that is not one.

    A missing file has no lines. Blank lines are skipped; a line cut short, a
    line of garbage or a JSON value that is not an object is ``None``, so the
    caller can count what it could not read.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    for line in raw.splitlines():
        if line.strip():
            yield parse_object(line)


def parse_object(line: bytes) -> dict[str, Any] | None:
    """One line as a JSON object, or ``None``: the one way every reader parses a line, so
    a file read whole and one read as it grows accept the same lines."""
    try:
        value = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        # Not UTF-8, not JSON, an integer too long to convert, or nested too deep.
        return None
    return value if isinstance(value, dict) else None


def read_lines(path: Path, parse: Callable[[Mapping[str, Any]], T | None]
               ) -> tuple[list[T], int]:
    """Every line of ``path`` that ``parse`` accepts, in file order, and how many it did
    not (damaged lines included): the read loop of every JSON-lines format."""
    items: list[T] = []
    bad = 0
    for obj in iter_objects(path):
        item = None if obj is None else parse(obj)
        if item is None:
            bad += 1
        else:
            items.append(item)
    return items, bad


def version_of(obj: Mapping[str, Any], key: str) -> int | None:
    """The version of a line or document; 1 when absent (the first release wrote none)."""
    value = obj.get(key, 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite JSON number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
