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
    │   ├── CorruptStateError    a state file exists but does not parse
    │   ├── ResumeEnvError       a shard's resume overrides cannot be read (sidecar.resume)
    │   └── StateGoneError       the state dir vanished or was replaced while in service
    ├── UnknownShardError        a shard with neither a ladder nor a registered worker
    ├── TooManyAlerts            a webhook notification holds more alerts than the sidecar
    │                            judges in one request (the API answers 413)
    ├── VramError                a VRAM source failed (NVML missing, bad file)
    │   └── SharedMemoryError    the shared-GPU-memory source failed (PDH, bad file)
    ├── ProcessError             a worker process cannot be inspected or signalled
    ├── RungRefused              the sidecar will not take a rung now (paused, action=off,
    │                            a rung already in progress)
    ├── HttpError                an HTTP peer could not be reached or answered nothing usable
    ├── SidecarUnavailable       a client could not reach the sidecar API
    │   └── SidecarRefused       the sidecar answered with an error (bad token, refused rung)
    ├── ReportError              the evidence report cannot be made (no state, no matplotlib)
    ├── DrillRefused             a fire drill cannot start (no running worker for the shard)
    ├── UnobservedPoolError      an instrumented model sent to a multi-process pool
    └── NoEvidenceSource         ``up`` without any source of spill evidence (no --blind)

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


class StateGoneError(StateError):
    """The state directory this process opened for service vanished or was replaced.

    Never answered by making it afresh (an empty one forgets every ladder): ``up``
    and ``run`` stop with exit status 4 (``crawlguard.supervisor.loop.EXIT_STATE_GONE``)
    so that no service manager restarts them into an empty directory.
    """


class CorruptStateError(StateError):
    """A state file exists but is not what crawlguard wrote (half-written, edited)."""


class ResumeEnvError(StateError):
    """A shard's resume overrides (the ``env`` of its ladder.json) cannot be read.

    Never answered with an empty environment: relaunching a demoted shard on the
    GPU would bring the crawl back. Raised by ``crawlguard.sidecar.resume`` for builds' own
    supervisor loops, which may catch it alone (an unsafe shard name is an
    ``UnsafeNameError``, a ``ValueError``).
    """

class UnknownShardError(CrawlguardError, LookupError):
    """A shard the state dir knows nothing of: no ladder and no registered worker.

    Usually a typo; a manual rung for it would use up a rung of a shard that does
    not run (the API answers 404).
    """

    def __init__(self, shard: str, where: object) -> None:
        self.shard = shard
        super().__init__(f"shard {shard!r} is unknown in state dir {where}: it has no ladder "
                         "and no registered worker (a typo?)")


class TooManyAlerts(CrawlguardError):
    """A webhook notification holds more alerts than the sidecar judges in one request.

    Not a ``ValueError`` on purpose: raised while the payload is validated, before any
    alert is, it must pass through pydantic (which turns a ``ValueError`` into a 422)
    to the API's handler, which answers 413.
    """

    def __init__(self, count: int, limit: int) -> None:
        self.count = count
        self.limit = limit
        super().__init__(f"the notification holds {count} alerts; the sidecar judges at most "
                         f"{limit} in one (set max_alerts: {limit} in Alertmanager's "
                         "webhook_configs)")


class VramError(CrawlguardError):
    """A VRAM source could not produce a reading."""


class SharedMemoryError(VramError):
    """The shared-GPU-memory source (PDH on Windows, ``file:``) gave no reading."""


class ProcessError(CrawlguardError):
    """A worker process cannot be inspected or signalled."""


class RungRefused(CrawlguardError):
    """The sidecar refuses a manual rung or reset right now.

    Raised for a state that passes (pause, a rung in progress) or a policy
    (HELIX_BFM_CRAWL_ACTION=off); the API answers it with 409 Conflict.
    """


class HttpError(CrawlguardError):
    """An HTTP call got no usable answer: the peer could not be reached, timed out, or
    answered what the caller cannot use; ``url`` is what was asked."""

    def __init__(self, url: str, why: str) -> None:
        self.url = url
        self.why = why
        super().__init__(f"{url}: {why}")


class SidecarUnavailable(CrawlguardError):
    """A client of the sidecar API got no usable answer."""


class SidecarRefused(SidecarUnavailable):
    """The sidecar answered, but with an error status; ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class ReportError(CrawlguardError):
    """The report cannot be made (no state dir, no shards, matplotlib missing)."""


class DrillRefused(CrawlguardError):
    """``crawlguard drill`` cannot start: no running worker for the shard, or a rig whose
    ladder could not act on it (the sidecar unreachable, paused, or set to alert only)."""


class UnobservedPoolError(CrawlguardError, RuntimeError):
    """An instrumented model is being sent to a child process (a multi-process encode
    pool), where crawlguard could neither watch its batches nor restart it."""


class NoEvidenceSource(CrawlguardError):
    """``crawlguard up`` refuses a rig where no source of spill evidence works (no NVML,
    no ``file:`` VRAM source, no shared-memory source) unless told ``--blind``: it
    could never confirm a crawl."""
