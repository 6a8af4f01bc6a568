"""The one name type: a shard or stage name that may become a path component.

A shard name arrives from many places (an alert label, an HTTP path, a command
line, a fleet file, a directory listing, the build's own ``CrawlTracker``
call). Each of those boundaries parses it once into a ``ShardName`` and passes
the type inward, so the rules below live here and nowhere else::

    1-128 of A-Z a-z 0-9 . _ - , starting with a letter or digit,
    no '..', no trailing '.', no Windows device name (con, nul, com1, ...)

Stage names follow the same rules (``kind="stage"`` only changes the message).
The rules keep a name safe as a file name on POSIX and Windows alike, as a
Prometheus label value and, unquoted, inside a JSON string.

``ShardName`` subclasses ``str``, so it is a drop-in wherever a ``str`` is
expected. Standard library only: ``crawlguard.sidecar.resume`` and ``deploy/k8s/generate.py``
use it where nothing else of crawlguard may be imported.
"""

from __future__ import annotations

import re

from .errors import UnsafeNameError

PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""The character rule alone (OpenAPI documents it); ``ShardName.parse`` is the whole check."""
# fullmatch, not PATTERN's '$': '$' also matches before a trailing newline.
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_WINDOWS_RESERVED = frozenset({"con", "prn", "aux", "nul"} | {
    f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)})


class ShardName(str):
    """A validated shard (or stage) name. Build one with ``ShardName.parse``."""

    __slots__ = ()

    @classmethod
    def parse(cls, value: object, kind: str = "shard") -> ShardName:
        """``value`` as a ``ShardName``; ``UnsafeNameError`` naming ``kind`` when it is not one."""
        if type(value) is cls:  # already parsed at an outer boundary
            return value
        if not isinstance(value, str):
            raise UnsafeNameError(kind, value, "must be a string")
        if not _SAFE.fullmatch(value):
            raise UnsafeNameError(
                kind, value, "use 1-128 of A-Z a-z 0-9 . _ - , starting with a letter or digit")
        if ".." in value or value.endswith("."):
            raise UnsafeNameError(kind, value, "'..' and a trailing '.' are not allowed")
        if value.split(".")[0].lower() in _WINDOWS_RESERVED:
            raise UnsafeNameError(kind, value, "reserved device name on Windows")
        return cls(value)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_env_name(value: str) -> bool:
    """An environment variable name a resume override or HELIX_BFM_DEVICE_VAR may use."""
    return _ENV_NAME.fullmatch(value) is not None
