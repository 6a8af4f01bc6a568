"""``<state>/run/up.json``: what a running ``crawlguard up`` tells its clients, and its schema.

``crawlguard up`` (``crawlguard.rig.up``) writes it when everything has started and
rewrites it when a server comes back; every client command reads it through
``read_up`` to reach that ``up`` with nothing but the state dir
(``crawlguard.kernel.discovery``). It lives here, not beside ``up``, because the
clients (``crawlguard status``, ``drill``) must not import the rig's servers to read it.
"""

from __future__ import annotations

from pathlib import Path

from .schema import CreateTime, StateModel, Time, read_file

UP_FILE = "up.json"


class UpTls(StateModel):
    """Absolute paths of the rig's TLS files (``crawlguard.kernel.tls``)."""

    ca_file: str | None
    cert_file: str | None
    key_file: str | None


class UpFile(StateModel):
    """The schema of ``<state>/run/up.json``: what a running ``up`` tells people and scripts."""

    pid: int
    alert_path: str
    urls: dict[str, str]
    """``exporter``, ``sidecar`` and, with Prometheus, ``prometheus`` and ``alertmanager``."""
    token_file: str
    """The sidecar's bearer token, first line of this file (absolute)."""
    shards: list[str]
    servers: dict[str, int | None]
    """Each server's pid; null while it is not running."""
    updated_at: Time
    exporter_token_file: str | None = None
    """On the external alert path (a rig of a fleet): the exporter's token file."""
    tls: UpTls | None = None
    """On the external alert path: the TLS files a client context is built from."""
    create_time: CreateTime | None = None
    """The creation time of process ``pid``: with it, the identity that tells a live
    ``up`` from a file a dead one left (absent in files of earlier versions)."""
    vram_source: str | None = None
    """HELIX_BFM_VRAM_SOURCE as this run reads it (the simulated GPU's with
    ``--simulate-gpu``), for ``crawlguard doctor`` run beside it."""
    shared_source: str | None = None
    """HELIX_BFM_SHARED_SOURCE as this run reads it."""


def up_path(state_dir: Path) -> Path:
    return Path(state_dir) / "run" / UP_FILE


def read_up(state_dir: Path) -> UpFile | None:
    """The up.json of ``state_dir``; None when no ``up`` wrote one. ``CorruptStateError``
    when it does not fit ``UpFile``."""
    return read_file(UpFile, up_path(state_dir), "a rig's state")
