"""How a client command finds the rig it operates: a running ``up`` first, then the knobs.

``crawlguard up`` records in ``<state>/run/up.json`` (``formats.upfile``) where its
servers listen, the file that holds the sidecar's token, its TLS files and its
sources. A client (``status``, ``rung``, ``pause``, ``resume``, ``doctor``, ``drill``)
started with nothing but the state dir (``HELIX_BFM_STATE_DIR``, or the default
``.crawlguard`` of the directory ``up`` was started in) reaches that ``up`` through
``rig_env``: the environment it parses its knobs from, with the knobs the running
``up`` implies filled in where the environment leaves them unset.

- ``HELIX_BFM_SIDECAR_URL`` set: nothing is discovered. A URL someone named is never
  sent a token that was made for the rig of the state dir.
- Otherwise, when up.json names a live ``up``: ``HELIX_BFM_SIDECAR_URL`` is its
  sidecar; ``HELIX_BFM_SIDECAR_TOKEN_FILE`` its token file unless
  ``HELIX_BFM_SIDECAR_TOKEN`` or ``_TOKEN_FILE`` is set; the ``HELIX_BFM_TLS_*`` files
  its TLS files unless one of them is set; ``HELIX_BFM_PROMETHEUS_URL`` and
  ``_ALERTMANAGER_URL`` its own (Prometheus path), ``HELIX_BFM_VRAM_SOURCE`` and
  ``_SHARED_SOURCE`` the sources it reads, each unless set.
- Otherwise the knobs alone, with their defaults (``http://127.0.0.1:9848``).

Live means: the process that wrote up.json is still the one running (pid AND
creation time, ``kernel.processes``); for a file written before ``up`` recorded its
creation time, or a pid that cannot be inspected, its sidecar answering ``/healthz``.
A file that a dead ``up`` left behind is ignored, and so is one that cannot be read
(the knobs still work), with a warning in the log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import processes
from .errors import CrawlguardError, ProcessError
from .formats.upfile import UpFile, read_up
from .logs import get_logger
from .settings import PREFIX, state_dir_from_env
from .tls import CA_KNOB, CERT_KNOB, KEY_KNOB

log = get_logger(__name__)

URL_KNOB = PREFIX + "SIDECAR_URL"
TOKEN_KNOB = PREFIX + "SIDECAR_TOKEN"
TOKEN_FILE_KNOB = PREFIX + "SIDECAR_TOKEN_FILE"
HEALTH_TIMEOUT_S = 2.0

HELP = ("A running 'crawlguard up' on the state dir (HELIX_BFM_STATE_DIR, default "
        ".crawlguard) is found through its run/up.json: its sidecar's URL, token file and "
        "TLS files. Knobs set in the environment win over what is found: "
        "HELIX_BFM_SIDECAR_URL turns finding off, HELIX_BFM_SIDECAR_TOKEN or _TOKEN_FILE "
        "replaces the token, HELIX_BFM_TLS_*_FILE the TLS files.")
"""The sentence every client command's --help carries."""


@dataclass(frozen=True)
class RigEnv:
    """The environment a client parses its knobs from, and the ``up`` it found (if any)."""

    env: dict[str, str]
    up: UpFile | None
    state_dir: Path

    @property
    def alert_path(self) -> str:
        """prometheus, embedded or external (alerts from outside: no ``up`` of ours
        evaluates them, or a fleet's central host does)."""
        return self.up.alert_path if self.up is not None else "external"


def _set(env: Mapping[str, str], name: str) -> bool:
    return bool((env.get(name) or "").strip())


def live_up(state_dir: Path) -> UpFile | None:
    """The up.json of ``state_dir`` when the ``up`` that wrote it still runs; else None."""
    try:
        up = read_up(state_dir)
    except CrawlguardError as exc:
        log.warning("ignoring %s: %s", state_dir / "run" / "up.json", exc)
        return None
    if up is None:
        return None
    alive = _process_alive(up)
    if alive is None:
        alive = _sidecar_answers(up)
    return up if alive else None


def _process_alive(up: UpFile) -> bool | None:
    """Whether ``up``'s process is the one that wrote the file; None: cannot tell."""
    if up.create_time is None:
        return None
    try:
        seen = processes.look(up.pid)
    except ProcessError:
        return None
    return (seen is not None and not seen.zombie
            and abs(seen.create_time - up.create_time) <= processes.CREATE_TIME_TOLERANCE_S)


def _sidecar_answers(up: UpFile) -> bool:
    url = up.urls.get("sidecar")
    if not url or not url.startswith("http://"):
        return False  # an https sidecar needs a client context: the pid had to tell
    from . import http  # httpx, only for a file that cannot tell by itself
    from .errors import HttpError

    try:
        return http.get(f"{url}/healthz", timeout=HEALTH_TIMEOUT_S).status == 200
    except HttpError:
        return False


def rig_env(env: Mapping[str, str] | None = None) -> RigEnv:
    """``env`` (default: the process's) with the knobs of a live ``up`` on its state dir
    filled in where ``env`` leaves them unset (rules in the module docstring)."""
    env = dict(os.environ if env is None else env)
    state_dir = state_dir_from_env(env)
    if _set(env, URL_KNOB):
        return RigEnv(env, None, state_dir)
    up = live_up(state_dir)
    if up is None or "sidecar" not in up.urls:
        return RigEnv(env, None, state_dir)
    found = {URL_KNOB: up.urls["sidecar"]}
    if not (_set(env, TOKEN_KNOB) or _set(env, TOKEN_FILE_KNOB)):
        found[TOKEN_FILE_KNOB] = up.token_file
    if up.tls is not None and not any(_set(env, k) for k in (CERT_KNOB, KEY_KNOB, CA_KNOB)):
        for knob, path in ((CERT_KNOB, up.tls.cert_file), (KEY_KNOB, up.tls.key_file),
                           (CA_KNOB, up.tls.ca_file)):
            if path:
                found[knob] = path
    for knob, value in ((PREFIX + "PROMETHEUS_URL", up.urls.get("prometheus")),
                        (PREFIX + "ALERTMANAGER_URL", up.urls.get("alertmanager")),
                        (PREFIX + "VRAM_SOURCE", up.vram_source),
                        (PREFIX + "SHARED_SOURCE", up.shared_source)):
        if value and not _set(env, knob):
            found[knob] = value
    return RigEnv({**env, **found}, up, state_dir)
