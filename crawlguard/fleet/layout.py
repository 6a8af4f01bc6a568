"""The folder ``crawlguard fleet generate`` writes (DIR), and its record ``fleet.json``.

    DIR/
      fleet.json                    the fleet as generated: `fleet status` and `fleet rung` read it
      ca/ca.crt, ca/ca.key          the fleet's CA (none when the fleet file brings one);
                                    keep ca.key off the rigs, and offline once generated
      central/                      copy to the central host as it is
        prometheus.yml              prometheus --config.file central/prometheus.yml
        alertmanager.yml            prometheus-alertmanager --config.file central/alertmanager.yml
        rules/                      crawlguard.rules.yml + crawlguard-fleet.rules.yml
        tls/ca.crt, client.crt, client.key
        tokens/NAME.token           each rig's bearer token
        grafana/                    dashboards (fleet, rebuild) and a datasource
      rigs/NAME/                    copy to the rig NAME as it is
        crawlguard.env              crawlguard up --env-file crawlguard.env --alert-path external
        token, tls.crt, tls.key, ca.crt

Every path inside the central configs is relative to ``central/``, and every
path in a rig's env file relative to its folder, so each folder can be copied
anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crawlguard.kernel.errors import ConfigError, StateError, UnsafeNameError
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.settings import MIN_TOKEN_CHARS
from crawlguard.kernel.statedir import read_json

from .fleetfile import (
    ALERTMANAGER_PORT,
    EXPORTER_PORT,
    PROMETHEUS_PORT,
    SIDECAR_PORT,
    Central,
    Fleet,
    Reader,
    Rig,
)

RECORD_VERSION = 1


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def record(self) -> Path:
        return self.root / "fleet.json"

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def central(self) -> Path:
        return self.root / "central"

    @property
    def central_tls(self) -> Path:
        return self.central / "tls"

    def central_token(self, rig: str) -> Path:
        return self.central / "tokens" / f"{rig}.token"

    def rig_dir(self, rig: str) -> Path:
        return self.root / "rigs" / rig


def record(fleet: Fleet) -> dict[str, Any]:
    c = fleet.central
    return {"version": RECORD_VERSION, "fleet_file": str(fleet.path.resolve()),
            "central": {"host": c.host, "prometheus_port": c.prometheus_port,
                        "alertmanager_port": c.alertmanager_port},
            "rigs": [{"name": r.name, "host": r.host, "exporter_port": r.exporter_port,
                      "sidecar_port": r.sidecar_port} for r in fleet.rigs]}


def read_record(layout: Layout) -> tuple[Central, tuple[Rig, ...]]:
    """The central host and the rigs as ``generate`` last wrote them, checked again
    with the fleet file's own rules (the record is a file anyone can edit)."""
    try:
        data = read_json(layout.record)
    except StateError as exc:  # CorruptStateError included
        raise ConfigError("FLEET_FILE_OR_DIR", str(layout.record), f"unreadable: {exc}") from exc
    if data is None:
        raise ConfigError("FLEET_FILE_OR_DIR", str(layout.root),
                          "has no fleet.json: run 'crawlguard fleet generate' first")
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
        raise ConfigError("FLEET_FILE_OR_DIR", str(layout.record),
                          f"not a fleet record of version {RECORD_VERSION}")
    reader = Reader(layout.record)
    try:
        c = data["central"]
        central = Central(
            host=reader.host(c["host"], "central.host"),
            prometheus_port=reader.port(c["prometheus_port"], "central", PROMETHEUS_PORT),
            alertmanager_port=reader.port(c["alertmanager_port"], "central",
                                          ALERTMANAGER_PORT))
        rigs = tuple(Rig(name=ShardName.parse(r["name"], kind="rig"),
                         host=reader.host(r["host"], "rigs"),
                         exporter_port=reader.port(r["exporter_port"], "rigs", EXPORTER_PORT),
                         sidecar_port=reader.port(r["sidecar_port"], "rigs", SIDECAR_PORT))
                     for r in data["rigs"])
    except (KeyError, TypeError, UnsafeNameError) as exc:
        raise ConfigError("FLEET_FILE_OR_DIR", str(layout.record),
                          f"malformed fleet record ({exc})") from exc
    return central, rigs


def read_token(path: Path) -> str | None:
    """A token file's first line; None when the file does not exist."""
    try:
        first = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), None, f"cannot read the token: {exc}") from exc
    token = first[0].strip() if first else ""
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(str(path), None, f"holds no token of at least {MIN_TOKEN_CHARS} "
                          "characters: delete it (and its twin) to make a new one")
    return token
