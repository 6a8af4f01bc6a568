"""One OS boundary's implementation for the whole process, which tests replace.

Each Windows module (``winjob``, ``winproc``, ``winacl``, ``winconsole``) puts its
calls behind a small protocol, with the real implementation (ctypes) made on
first use, only where it exists, and a fake installed by the tests at exactly
that boundary (``tests/winfakes.py``). ``Seam`` is that slot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Seam(Generic[T]):
    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._api: T | None = None

    def get(self) -> T:
        """The implementation in use (the real one, made now, unless replaced)."""
        if self._api is None:
            self._api = self._make()
        return self._api

    def set(self, new: T | None) -> T | None:
        """Install ``new`` (None: the real one on next use); returns the previous one."""
        old, self._api = self._api, new
        return old
