"""Every knob crawlguard reads, parsed and validated in one place.

Knobs come from the environment (``HELIX_BFM_*``); command-line flags override
them by building the same dataclasses with ``dataclasses.replace``. Parsing
reads the environment and, for a ``*_TOKEN_FILE`` knob, the first line of the
file it names; it opens nothing else and starts nothing, so a bad value is
reported before anything has started (tests/kernel/test_settings_io.py).

Each group is its own dataclass so a process parses only what it uses: a build
worker that creates a ``CrawlTracker`` must not refuse to start because the
sidecar's port knob is malformed.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from . import rungs
from .errors import ConfigError
from .listen import url_host
from .names import is_env_name
from .tls import CA_KNOB, CERT_KNOB, KEY_KNOB, TlsFiles

PREFIX = "HELIX_BFM_"
SET_FOR_CHILDREN = frozenset({
    PREFIX + "SHARD",                    # the supervisor, for each worker: its shard
    PREFIX + "SIMGPU_DIR",               # up --simulate-gpu, for the reference build
    PREFIX + "TEST_CRASH_AFTER_DECIDE",  # a test hook of the sidecar (cli/serve.py)
    PREFIX + "STATE_DIR_ESTABLISHED",    # up and run: the state dir exists, never create it
})
"""HELIX_BFM_* names crawlguard sets in its children's environments: not knobs, but
not misspellings either (``unknown_knobs``)."""
LADDER, OFF = "ladder", "off"
ACTIONS = (LADDER, rungs.CPU.name, OFF)
"""HELIX_BFM_CRAWL_ACTION: climb the ladder, take the CPU rung at every crawl
(the action is named for that rung), or only alert."""
# What the sidecar's API schemas validate; to mypy a plain string (see kernel.rungs).
if TYPE_CHECKING:
    ActionName = str
else:
    ActionName = Literal[ACTIONS]

T = TypeVar("T")


def _get(env: Mapping[str, str], knob: str, default: T, parse: Callable[[str, str], T]) -> T:
    raw = env.get(knob)
    if raw is None or raw.strip() == "":
        return default
    return parse(knob, raw.strip())


def _float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Callable[[str, str], float]:
    def parse(knob: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(knob, raw, "not a number") from None
        if not math.isfinite(value):
            raise ConfigError(knob, raw, "must be a finite number")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise ConfigError(knob, raw, f"must be {'>' if lo_open else '>='} {lo:g}")
        if hi is not None and (value > hi or (hi_open and value == hi)):
            raise ConfigError(knob, raw, f"must be {'<' if hi_open else '<='} {hi:g}")
        return value

    return parse


def _int(lo: int, hi: int | None = None) -> Callable[[str, str], int]:
    def parse(knob: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(knob, raw, "not a whole number") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise ConfigError(knob, raw, f"must be {bound}")
        return value

    return parse


def _port(knob: str, raw: str) -> int:
    return _int(0, 65535)(knob, raw)


def port_flag(flag: str, value: int | None) -> int | None:
    """A ``--port`` flag, checked like the port knobs (None: not given)."""
    return None if value is None else _port(flag, str(value))


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(knob: str, raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            raise ConfigError(knob, raw, f"must be one of {', '.join(choices)}")
        return value

    return parse


def _env_name(knob: str, raw: str) -> str:
    if not is_env_name(raw):
        raise ConfigError(knob, raw,
                          "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
    return raw


# Variables the CPU rung must never set to "cpu": the loader, the interpreter, the
# shell and crawlguard's own knobs. Matched case-insensitively (Windows' environment is).
_RESERVED_VARS = frozenset({
    "PATH", "PATHEXT", "HOME", "USER", "USERNAME", "SHELL", "IFS", "ENV", "BASH_ENV",
    "TMPDIR", "TEMP", "TMP", "SYSTEMROOT", "COMSPEC", "WINDIR", "PSMODULEPATH",
    "NODE_OPTIONS", "PERL5LIB", "RUBYLIB", "JAVA_TOOL_OPTIONS", "PROMPT_COMMAND"})
_RESERVED_PREFIX = re.compile(r"^(LD_|DYLD_|PYTHON|HELIX_BFM_)", re.IGNORECASE)


def _device_var(knob: str, raw: str) -> str:
    name = _env_name(knob, raw)
    if name.upper() in _RESERVED_VARS or _RESERVED_PREFIX.match(name):
        raise ConfigError(knob, raw, "names a variable the loader, the interpreter, the shell "
                          "or crawlguard itself reads (PATH, LD_*, DYLD_*, PYTHON*, "
                          "HELIX_BFM_*, ...); name the build's own device variable")
    return name


def _text(knob: str, raw: str) -> str:
    return raw


def _url(knob: str, raw: str) -> str:
    if not re.match(r"^https?://[^\s/]+", raw):
        raise ConfigError(knob, raw, "must be an http:// or https:// URL")
    return raw.rstrip("/")


def _vram_source(knob: str, raw: str) -> str:
    if raw == "nvml":
        return raw
    if raw.startswith("file:") and len(raw) > len("file:"):
        return raw
    raise ConfigError(knob, raw, "must be 'nvml' or 'file:PATH'")


SHARED_SOURCES = ("auto", "pdh", "off")


def _shared_source(knob: str, raw: str) -> str:
    if raw.lower() in SHARED_SOURCES:
        return raw.lower()
    if raw.startswith("file:") and len(raw) > len("file:"):
        return raw
    raise ConfigError(knob, raw, "must be 'auto', 'pdh', 'off' or 'file:PATH'")


@dataclass(frozen=True)
class Detection:
    """How the worker-side rate tracker recognises a crawl."""

    factor: float = 5.0
    """Crawl when EMA < baseline / factor. 5 separates incident 1 (15.3 -> 2.3
    genes/s, a 6.7x drop) from ordinary batch-length variance (well under 2x)."""
    window: int = 8
    """Consecutive slow batches (not seconds) before the signature holds, so a
    long shard and a short one are judged alike."""
    vram_full_ratio: float = 0.95
    """Dedicated VRAM used/total at or above which the GPU counts as full;
    incident 1 sat at 11.85/12 GB = 0.9875."""
    shared_min_bytes: int = 512 * 2**20
    """Shared (system) GPU memory of the worker process, in bytes, at or above
    which it has spilled (Task Manager's "Shared GPU memory" of the process).
    512 MiB: a healthy CUDA worker under WDDM holds some shared memory (its
    context, pinned staging buffers: tens to low hundreds of MiB), while a spill
    that slows batches five-fold moves gigabytes of the working set. The rate
    signature must hold as well, so a healthy worker above it never alerts."""
    warmup_batches: int = 2
    """Batches ignored after a worker starts: model load and allocator warm-up
    make the first batches slow for reasons that are not a crawl."""
    baseline_batches: int = 5
    """Batches after warm-up whose median rate becomes the shard's baseline;
    a median of five survives one or two outliers."""
    ema_alpha: float = 0.5
    """EMA smoothing per batch (weight of the newest batch). 0.5 falls below
    baseline/5 within five batches of incident 1's decay, yet one or two
    batches ten times slower than the baseline never take it under the line."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Detection:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            factor=_get(env, PREFIX + "CRAWL_FACTOR", d.factor, _float(1.0, lo_open=True)),
            window=_get(env, PREFIX + "CRAWL_WINDOW", d.window, _int(1, 100_000)),
            vram_full_ratio=_get(env, PREFIX + "VRAM_FULL_RATIO", d.vram_full_ratio,
                                 _float(0.0, 1.0, lo_open=True)),
            shared_min_bytes=_get(env, PREFIX + "SHARED_MIN_BYTES", d.shared_min_bytes,
                                  _int(1, 2**53)),
            warmup_batches=_get(env, PREFIX + "WARMUP_BATCHES", d.warmup_batches,
                                _int(0, 100_000)),
            baseline_batches=_get(env, PREFIX + "BASELINE_BATCHES", d.baseline_batches,
                                  _int(1, 100_000)),
            ema_alpha=_get(env, PREFIX + "EMA_ALPHA", d.ema_alpha, _float(0.0, 1.0, lo_open=True)),
        )


@dataclass(frozen=True)
class Remediation:
    """What the sidecar and the supervisor do about a crawl."""

    action: str = LADDER
    """ladder (restart, then CPU), cpu (straight to CPU) or off (alert only)."""
    device_var: str = "BGEM3_DEVICE"
    """The resume-environment variable the CPU rung sets to ``cpu``."""
    grace_seconds: float = 30.0
    """Seconds between the graceful signal and the hard kill: long enough for
    the build's salvage to flush the batch it holds."""
    gpu_release_timeout: float = 60.0
    """Seconds the supervisor waits for a dead worker's VRAM to be released
    before relaunching anyway (the driver frees it asynchronously)."""
    max_futile_restarts: int = 3
    """Relaunches in a row without a single new gene before the supervisor
    gives up on a shard instead of crash-looping for days."""
    cpu_backfill_max_vram_gb: float = 0.0
    """Policy 'CPU backfill by default on small rigs': when > 0 and the GPU
    has at most this many GB, the backfill stage starts on CPU. 0 = off."""
    oom_wait_seconds: float = 60.0
    """Seconds the supervisor holds the relaunch of a worker that died of OOM
    until the sidecar has taken its BFMShardOOM alert, so a CPU rung's
    environment reaches that relaunch. Covers scrape, evaluation and delivery
    (seconds on the embedded path, group_wait 10 s with Alertmanager); 0 = no wait."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Remediation:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            action=_get(env, PREFIX + "CRAWL_ACTION", d.action, _choice(*ACTIONS)),
            device_var=device_var_from_env(env),
            grace_seconds=_get(env, PREFIX + "GRACE_SECONDS", d.grace_seconds, _float(0.0)),
            gpu_release_timeout=_get(env, PREFIX + "GPU_RELEASE_TIMEOUT", d.gpu_release_timeout,
                                     _float(0.0)),
            max_futile_restarts=_get(env, PREFIX + "MAX_FUTILE_RESTARTS", d.max_futile_restarts,
                                     _int(1, 1000)),
            cpu_backfill_max_vram_gb=_get(env, PREFIX + "CPU_BACKFILL_MAX_VRAM_GB",
                                          d.cpu_backfill_max_vram_gb, _float(0.0)),
            oom_wait_seconds=_get(env, PREFIX + "OOM_WAIT_SECONDS", d.oom_wait_seconds,
                                  _float(0.0)),
        )


@dataclass(frozen=True)
class Endpoints:
    """Where the exporter and the sidecar listen, and how clients reach them.

    Loopback by default: the sidecar can kill processes. Beyond loopback both
    servers demand TLS and a token (``crawlguard.kernel.listen.refuse_plaintext``).
    """

    exporter_host: str = "127.0.0.1"
    exporter_port: int = 9847
    sidecar_host: str = "127.0.0.1"
    sidecar_port: int = 9848
    sidecar_url: str = "http://127.0.0.1:9848"
    token: str | None = field(default=None, repr=False)
    """Bearer token the sidecar demands (HELIX_BFM_SIDECAR_TOKEN, or the first
    line of the file HELIX_BFM_SIDECAR_TOKEN_FILE)."""
    exporter_token: str | None = field(default=None, repr=False)
    """Bearer token the exporter demands on /metrics when set
    (HELIX_BFM_EXPORTER_TOKEN or _FILE). A fleet rig sets it to the rig's token,
    which the central Prometheus sends; a local Prometheus scrapes without one."""
    tls: TlsFiles = field(default_factory=TlsFiles)
    """HELIX_BFM_TLS_CERT_FILE / _KEY_FILE / _CA_FILE (``crawlguard.kernel.tls``)."""
    allow_plaintext: bool = False
    """HELIX_BFM_ALLOW_PLAINTEXT=1: serve plain HTTP beyond loopback, and the
    exporter without a token, where something else isolates the ports (the
    Kubernetes manifests' NetworkPolicy). The sidecar still demands its token."""
    header_timeout: float = 10.0
    """Seconds a client of either server has, from connecting, to finish its TLS
    handshake and send its request line and headers; then the connection is closed.
    Prometheus, Alertmanager and crawlguard's clients send a request in one write,
    so 10 s is slack for a congested LAN, while a client that connects and says
    nothing (or a byte at a time) holds a connection for no longer than that."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Endpoints:
        env = os.environ if env is None else env
        d = cls()
        sidecar_host = _get(env, PREFIX + "SIDECAR_HOST", d.sidecar_host, _text)
        sidecar_port = _get(env, PREFIX + "SIDECAR_PORT", d.sidecar_port, _port)
        tls = _tls(env)
        # With TLS the sidecar's certificate names its host, not 127.0.0.1.
        default_url = (f"https://{url_host(sidecar_host)}:{sidecar_port}" if tls.serves
                       else f"http://127.0.0.1:{sidecar_port}")
        return cls(
            exporter_host=_get(env, PREFIX + "EXPORTER_HOST", d.exporter_host, _text),
            exporter_port=_get(env, PREFIX + "EXPORTER_PORT", d.exporter_port, _port),
            sidecar_host=sidecar_host,
            sidecar_port=sidecar_port,
            sidecar_url=_get(env, PREFIX + "SIDECAR_URL", default_url, _url),
            token=_token(env, "SIDECAR"),
            exporter_token=_token(env, "EXPORTER"),
            tls=tls,
            allow_plaintext=_get(env, PREFIX + "ALLOW_PLAINTEXT", d.allow_plaintext, _bool),
            header_timeout=_get(env, PREFIX + "HEADER_TIMEOUT", d.header_timeout,
                                _float(0.1, 600.0)),
        )


def _bool(knob: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(knob, raw, "must be 1 or 0 (true/false, yes/no, on/off)")


def _path(knob: str, raw: str) -> Path:
    return Path(raw)


def _tls(env: Mapping[str, str]) -> TlsFiles:
    cert = _get(env, CERT_KNOB, None, _path)
    key = _get(env, KEY_KNOB, None, _path)
    if (cert is None) != (key is None):
        given, missing = (CERT_KNOB, KEY_KNOB) if key is None else (KEY_KNOB, CERT_KNOB)
        raise ConfigError(missing, None, f"{given} is set: set both the certificate and its "
                          "key, or neither")
    return TlsFiles(cert=cert, key=key, ca=_get(env, CA_KNOB, None, _path))


MIN_TOKEN_CHARS = 16
"""A shorter bearer token is guessable; `up` generates 43 characters."""


def _token(env: Mapping[str, str], server: str = "SIDECAR") -> str | None:
    """HELIX_BFM_<server>_TOKEN, or the first line of HELIX_BFM_<server>_TOKEN_FILE."""
    knob, file_knob = f"{PREFIX}{server}_TOKEN", f"{PREFIX}{server}_TOKEN_FILE"
    token = (env.get(knob) or "").strip()
    path = env.get(file_knob) or ""
    if token and path.strip():
        raise ConfigError(file_knob, path, f"set together with {knob}: set one of them, "
                          "not both")
    if token:
        return _strong(knob, token, "<the token>")
    if not path.strip():
        return None
    try:
        first = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(file_knob, path, f"cannot read: {exc.strerror}") from exc
    if not first or not first[0].strip():
        raise ConfigError(file_knob, path, "the file is empty")
    return _strong(file_knob, first[0].strip(), path)


def _strong(knob: str, token: str, shown: str) -> str:
    # The message never carries the token itself.
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(knob, shown, f"the token has {len(token)} characters; use at least "
                          f"{MIN_TOKEN_CHARS} (e.g. python -c \"import secrets; "
                          "print(secrets.token_urlsafe(32))\")")
    return token


def state_dir_from_env(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(_get(env, PREFIX + "STATE_DIR", ".crawlguard", _text))


ESTABLISHED_VAR = PREFIX + "STATE_DIR_ESTABLISHED"
"""Set to 1 by ``up`` and ``run`` in their children's environments (the sidecar, the
workers): the state dir was made by the parent, so a child that finds it missing must
refuse, never create an empty one (``StateDir(create=False)``)."""


def state_dir_established(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a child of ``up``/``run`` (``ESTABLISHED_VAR``)."""
    env = os.environ if env is None else env
    return _get(env, ESTABLISHED_VAR, False, _bool)


def device_var_from_env(env: Mapping[str, str] | None = None) -> str:
    """HELIX_BFM_DEVICE_VAR alone, for a build worker that parses no sidecar knob."""
    env = os.environ if env is None else env
    return _get(env, PREFIX + "DEVICE_VAR", Remediation.device_var, _device_var)


def vram_source_from_env(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return _get(env, PREFIX + "VRAM_SOURCE", "nvml", _vram_source)


def shared_source_from_env(env: Mapping[str, str] | None = None) -> str:
    """HELIX_BFM_SHARED_SOURCE: where the workers' shared GPU memory is read.

    ``auto`` (default) is ``pdh`` on Windows, where the driver counts the memory
    that spilled, and ``off`` elsewhere, where nothing counts it; ``file:PATH``
    is for tests and the simulated GPU of the reference rebuild.
    """
    env = os.environ if env is None else env
    return _get(env, PREFIX + "SHARED_SOURCE", "auto", _shared_source)


@dataclass(frozen=True)
class Preflight:
    """Where ``crawlguard doctor`` finds the parts of the alert path it checks.

    Unset means "not part of this rig": the check is skipped, not failed,
    because a rig on the embedded evaluator runs neither Prometheus nor
    Alertmanager.
    """

    prometheus_url: str | None = None
    """HELIX_BFM_PROMETHEUS_URL, e.g. http://127.0.0.1:9090."""
    alertmanager_url: str | None = None
    """HELIX_BFM_ALERTMANAGER_URL, e.g. http://127.0.0.1:9093."""
    windows_exporter_url: str | None = None
    """HELIX_BFM_WINDOWS_EXPORTER_URL, e.g. http://127.0.0.1:9182: a rig whose
    windows_exporter runs the gpu collector has its shared-memory evidence there."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Preflight:
        env = os.environ if env is None else env
        return cls(
            prometheus_url=_get(env, PREFIX + "PROMETHEUS_URL", None, _url),
            alertmanager_url=_get(env, PREFIX + "ALERTMANAGER_URL", None, _url),
            windows_exporter_url=_get(env, PREFIX + "WINDOWS_EXPORTER_URL", None, _url),
        )


@dataclass(frozen=True)
class Settings:
    """All knobs of one rebuild. Built once at start by ``Settings.from_env``."""

    state_dir: Path = Path(".crawlguard")
    vram_source: str = "nvml"
    shared_source: str = "auto"
    detection: Detection = field(default_factory=Detection)
    remediation: Remediation = field(default_factory=Remediation)
    endpoints: Endpoints = field(default_factory=Endpoints)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            state_dir=state_dir_from_env(env),
            vram_source=vram_source_from_env(env),
            shared_source=shared_source_from_env(env),
            detection=Detection.from_env(env),
            remediation=Remediation.from_env(env),
            endpoints=Endpoints.from_env(env),
        )


def knob_names() -> frozenset[str]:
    """Every HELIX_BFM_* name ``Settings.from_env`` and ``Preflight.from_env`` read. Found
    by letting them read an empty environment that records the names asked for, so it
    cannot drift."""
    asked: set[str] = set()

    class Recorder(Mapping[str, str]):
        def __getitem__(self, key: str) -> str:
            asked.add(key)
            raise KeyError(key)

        def __iter__(self) -> Iterator[str]:
            return iter(())

        def __len__(self) -> int:
            return 0

    Settings.from_env(Recorder())
    Preflight.from_env(Recorder())
    return frozenset(asked)


def unknown_knobs(env: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """Each name in ``env`` that looks like a knob (``HELIX_BFM_``, any case) but is none
    crawlguard reads, with the closest knob (None when nothing is close). A misspelled
    knob is otherwise silently ignored: HELIX_BFM_CRAWL_FACTR leaves the factor at 5."""
    knobs = knob_names()
    # Compared without the prefix every name shares, or any name would look close.
    tails = sorted(k[len(PREFIX):] for k in knobs)
    out: list[tuple[str, str | None]] = []
    for name in sorted(env):
        if name.upper().startswith(PREFIX) and name not in knobs | SET_FOR_CHILDREN:
            close = difflib.get_close_matches(name[len(PREFIX):].upper(), tails, n=1,
                                              cutoff=0.6)
            out.append((name, PREFIX + close[0] if close else None))
    return out


def unknown_knob_lines(env: Mapping[str, str]) -> list[str]:
    """``unknown_knobs`` as one line each, for a person: what every command that starts
    something (up, run, sidecar, exporter) and ``crawlguard doctor`` say."""
    return [f"{name} is not a knob crawlguard reads (ignored)"
            + (f": did you mean {close}?" if close else "")
            for name, close in unknown_knobs(env)]
