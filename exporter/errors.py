"""The one exception tree of crawlguard.

Every error crawlguard raises on purpose is a ``CrawlguardError``; third-party
and OS errors (pynvml, psutil, httpx, ``OSError``) are translated into it at the
single boundary that talks to them, with ``raise ... from exc`` so the cause is
kept. Callers that want "anything crawlguard refused" catch the root; the
command line turns it into a one-line message and a non-zero exit, never a
traceback::

    CrawlguardError
    ├── ConfigError              a knob (HELIX_BFM_*) or flag has a bad value
    ├── UnsafeNameError          a shard/stage/device name that may not touch a path
    ├── StateError               the state directory cannot be read or written
    │   └── CorruptStateError    a state file exists but does not parse
    ├── VramError                a VRAM source failed (NVML missing, bad file)
    ├── ProcessError             a worker process cannot be inspected or signalled
    │   └── IdentityMismatch     the pid now belongs to another process
    └── SidecarUnavailable       a client could not reach the sidecar API

The module imports nothing from crawlguard so any layer may use it.
"""

from __future__ import annotations


class CrawlguardError(Exception):
    """Root of every error crawlguard raises on purpose."""


class ConfigError(CrawlguardError, ValueError):
    """A knob or flag has a value crawlguard refuses.

    The message always names the knob and the offending value, because the
    person reading it is starting a multi-day rebuild and must fix it at once.
    """

    def __init__(self, knob: str, value: object, why: str) -> None:
        self.knob = knob
        self.value = value
        self.why = why
        super().__init__(f"{knob}={value!r}: {why}")


class UnsafeNameError(CrawlguardError, ValueError):
    """A name (shard, stage, device) that is not safe to use in a path."""

    def __init__(self, kind: str, value: object, why: str) -> None:
        self.kind = kind
        self.value = value
        super().__init__(f"{kind} {value!r} is not a safe name: {why}")


class StateError(CrawlguardError):
    """The state directory cannot be read or written."""


class CorruptStateError(StateError):
    """A state file exists but is not what crawlguard wrote (half-written, edited)."""


class VramError(CrawlguardError):
    """A VRAM source could not produce a reading."""


class ProcessError(CrawlguardError):
    """A worker process cannot be inspected or signalled."""


class IdentityMismatch(ProcessError):
    """The registered pid is alive but its creation time differs: a reused pid."""


class SidecarUnavailable(CrawlguardError):
    """A client of the sidecar API got no usable answer."""
