"""The fleet file: the central host and every rig, parsed and checked in one place.

    central:
      host: 10.0.0.5              # where Prometheus, Alertmanager (and Grafana) run
      prometheus_port: 9090       # optional, these are the defaults
      alertmanager_port: 9093
      interval: 5s                # optional: scrape and evaluation interval
      rig_down_for: 1m            # optional: BFMRigDown's `for:`
      runbook_url: https://...    # optional: where the alerts' runbook links point
      cert: central.crt           # optional: bring the central host's client certificate
      key: central.key
    tls:                          # optional: bring your own CA
      ca_cert: ca.crt
      ca_key: ca.key              # optional: with it, crawlguard issues what is not brought
    rigs:
      - {name: rig1, host: 10.0.0.11}                  # exporter_port 9847, sidecar_port 9848
      - {name: rig2, host: 10.0.0.12, exporter_port: 9847, sidecar_port: 9848,
         cert: rig2.crt, key: rig2.key}                # optional: bring its certificate

A rig's name becomes a folder (``DIR/rigs/NAME``), a label value (``rig``) and
part of a receiver's name, so it follows the shard-name rules
(``crawlguard.kernel.names``). Relative paths are taken from the fleet file's
folder. Every mistake is a ``ConfigError`` naming the file and the field; an
unknown key is one too, so a typo is never silently a default.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crawlguard.kernel.errors import ConfigError, UnsafeNameError
from crawlguard.kernel.names import ShardName

EXPORTER_PORT = 9847
SIDECAR_PORT = 9848
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
DEFAULT_RUNBOOK = "https://github.com/crawlguard/crawlguard/blob/main/sidecar/runbook.md"
"""The runbook the central host's alerts link to: no sidecar runs there to serve it."""

_DNS = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                  r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Brought:
    """A certificate and its key the user brings instead of having crawlguard issue them."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Central:
    host: str
    prometheus_port: int = PROMETHEUS_PORT
    alertmanager_port: int = ALERTMANAGER_PORT
    interval: float | None = None
    """Scrape and evaluation interval in seconds; None: the shipped one (5 s)."""
    rig_down_for: float = 60.0
    runbook_url: str = DEFAULT_RUNBOOK
    brought: Brought | None = None


@dataclass(frozen=True)
class Rig:
    name: ShardName
    host: str
    exporter_port: int = EXPORTER_PORT
    sidecar_port: int = SIDECAR_PORT
    brought: Brought | None = None

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def exporter_address(self) -> str:
        return f"{self.url_host}:{self.exporter_port}"

    @property
    def sidecar_url(self) -> str:
        return f"https://{self.url_host}:{self.sidecar_port}"

    @property
    def exporter_url(self) -> str:
        return f"https://{self.exporter_address}"


@dataclass(frozen=True)
class CaSource:
    cert: Path
    key: Path | None


@dataclass(frozen=True)
class Fleet:
    path: Path
    central: Central
    rigs: tuple[Rig, ...]
    ca: CaSource | None = None
    """The CA the user brings; None: crawlguard keeps its own in DIR/ca/."""


def find_rig(rigs: tuple[Rig, ...], name: str) -> Rig:
    for rig in rigs:
        if rig.name == name:
            return rig
    raise ConfigError("RIG", name, f"not in the fleet ({', '.join(r.name for r in rigs)})")


class Reader:
    """Checks of the fleet file's fields, each failure naming the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.resolve().parent

    def fail(self, where: str, value: object, why: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}", value, why)

    def mapping(self, value: object, where: str, allowed: Collection[str],
                required: Collection[str] = ()) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where or "the file", value, "must be a mapping (key: value)")
        unknown = sorted(set(value) - set(allowed), key=str)
        if unknown:
            raise self.fail(where or "the file", unknown[0],
                            f"unknown key; expected {', '.join(sorted(allowed))}")
        for key in sorted(set(required) - set(value)):
            raise self.fail(f"{where}.{key}" if where else key, None, "is required")
        return value

    def host(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, value, "must be an IP address or a DNS name")
        host = value.strip()
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if not _DNS.fullmatch(host):
                raise self.fail(where, value, "must be an IP address or a DNS name "
                                "(no scheme, no port)") from None
            return host
        if address.is_unspecified:
            raise self.fail(where, value, "the rig's own address, not a wildcard: its "
                            "certificate names it and the central host connects to it")
        return str(address)

    def port(self, value: object, where: str, default: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise self.fail(where, value, "must be a port number between 1 and 65535")
        return value

    def duration(self, value: object, where: str) -> float:
        text = str(value).strip()
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise self.fail(where, value, "must be a duration such as 500ms, 5s, 1m or 1m30s")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
        if seconds <= 0:
            raise self.fail(where, value, "must be longer than 0")
        return seconds

    def file(self, value: object, where: str) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, value, "must be a file path")
        path = Path(value)
        path = path if path.is_absolute() else self.base / path
        if not path.is_file():
            raise self.fail(where, value, f"no such file ({path})")
        return path

    def brought(self, entry: Mapping[str, Any], where: str) -> Brought | None:
        cert, key = entry.get("cert"), entry.get("key")
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            raise self.fail(f"{where}.{'key' if key is None else 'cert'}", None,
                            "bring the certificate and its key together, or neither")
        return Brought(self.file(cert, f"{where}.cert"), self.file(key, f"{where}.key"))


def load(path: Path) -> Fleet:
    reader = Reader(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("FLEET_FILE", str(path), f"cannot read: {exc.strerror or exc}") \
            from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        # PyYAML's messages span lines; the command line prints one.
        raise ConfigError("FLEET_FILE", str(path), "not YAML: " + " ".join(str(exc).split())) \
            from exc
    top = reader.mapping(data, "", {"central", "rigs", "tls"}, {"central", "rigs"})
    c = reader.mapping(top["central"], "central",
                       {"host", "prometheus_port", "alertmanager_port", "interval",
                        "rig_down_for", "runbook_url", "cert", "key"}, {"host"})
    runbook = c.get("runbook_url", DEFAULT_RUNBOOK)
    if not isinstance(runbook, str) or not re.match(r"^https?://\S+$", runbook):
        raise reader.fail("central.runbook_url", runbook, "must be an http(s):// URL")
    central = Central(
        host=reader.host(c["host"], "central.host"),
        prometheus_port=reader.port(c.get("prometheus_port"), "central.prometheus_port",
                                    PROMETHEUS_PORT),
        alertmanager_port=reader.port(c.get("alertmanager_port"), "central.alertmanager_port",
                                      ALERTMANAGER_PORT),
        interval=(None if c.get("interval") is None
                  else reader.duration(c["interval"], "central.interval")),
        rig_down_for=(60.0 if c.get("rig_down_for") is None
                      else reader.duration(c["rig_down_for"], "central.rig_down_for")),
        runbook_url=runbook.split("#", 1)[0],
        brought=reader.brought(c, "central"))
    ca = None
    if "tls" in top:
        t = reader.mapping(top["tls"], "tls", {"ca_cert", "ca_key"}, {"ca_cert"})
        ca = CaSource(reader.file(t["ca_cert"], "tls.ca_cert"),
                      reader.file(t["ca_key"], "tls.ca_key") if "ca_key" in t else None)
    entries = top["rigs"]
    if not isinstance(entries, list) or not entries:
        raise reader.fail("rigs", entries, "must list at least one rig")
    rigs: list[Rig] = []
    names: dict[str, int] = {}
    addresses: dict[tuple[str, int], str] = {}
    for i, entry in enumerate(entries):
        where = f"rigs[{i}]"
        r = reader.mapping(entry, where, {"name", "host", "exporter_port", "sidecar_port",
                                          "cert", "key"}, {"name", "host"})
        try:
            name = ShardName.parse(r["name"], kind="rig")
        except UnsafeNameError as exc:
            raise reader.fail(f"{where}.name", r["name"], str(exc)) from None
        if name.casefold() in names:  # one folder on Windows
            raise reader.fail(f"{where}.name", name,
                              f"already the name of rigs[{names[name.casefold()]}]")
        names[name.casefold()] = i
        rig = Rig(name=name, host=reader.host(r["host"], f"{where}.host"),
                  exporter_port=reader.port(r.get("exporter_port"), f"{where}.exporter_port",
                                            EXPORTER_PORT),
                  sidecar_port=reader.port(r.get("sidecar_port"), f"{where}.sidecar_port",
                                           SIDECAR_PORT),
                  brought=reader.brought(r, where))
        for port in (rig.exporter_port, rig.sidecar_port):
            owner = addresses.get((rig.host, port))
            if owner is not None:
                raise reader.fail(f"{where}", f"{rig.host}:{port}",
                                  f"that address is already {owner}'s")
            addresses[(rig.host, port)] = f"rig {name}"
        rigs.append(rig)
    brought_leaves = [r.brought for r in rigs] + [central.brought]
    if ca is not None and ca.key is None and any(b is None for b in brought_leaves):
        raise reader.fail("tls.ca_key", None, "without the CA's key crawlguard cannot issue "
                          "certificates: bring cert and key for every rig and the central host, "
                          "or the CA's key")
    if ca is None and any(b is not None for b in brought_leaves):
        raise reader.fail("tls.ca_cert", None, "certificates you bring need the CA that "
                          "signed them (tls.ca_cert), for the other side to verify them")
    return Fleet(path=path, central=central, rigs=tuple(rigs), ca=ca)
