"""``crawlguard fleet status`` and ``fleet rung``: every rig, reached from the central host.

The central host holds what Prometheus and Alertmanager use to reach the rigs
(``DIR/central/``: the fleet's CA, its client certificate, each rig's token),
and this module uses the same: a rig that answers here answers them, and a rig
that refuses here (TLS, 401) refuses them too. The rigs are asked in parallel,
each bounded by a timeout, so one rig that hangs does not hold up the table.

Each rig's answer, as ``--json`` prints it::

    {"rig": NAME, "host": HOST, "reachable": bool,
     "exporter": {"url": URL, "ok": bool, "error": str|null,
                  "shards": {SHARD: {"genes": int, "device": str|null}}},
     "sidecar":  {"url": URL, "ok": bool, "error": str|null},
     "action": str|null, "paused": bool|null,
     "shards": [the sidecar's view of each shard], "unreadable": [...]}
"""

from __future__ import annotations

import math
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from crawlguard.kernel import http
from crawlguard.kernel.errors import ConfigError, CrawlguardError, HttpError, SidecarUnavailable
from crawlguard.kernel.tls import TlsFiles
from crawlguard.sidecar.client import SidecarClient

from . import fleetfile
from .fleetfile import Rig
from .layout import Layout, read_record, read_token

TIMEOUT_S = 5.0


def open_fleet(target: Path, out: Path | None = None) -> tuple[Layout, tuple[Rig, ...]]:
    """The generated folder and its rigs, from the folder itself or from the fleet file
    (whose generated folder is ``out``, or the fleet file's own folder when that holds
    fleet.json)."""
    if target.is_dir():
        layout = Layout(target.resolve())
        return layout, read_record(layout)[1]
    fleet = fleetfile.load(target)
    folder = out if out is not None else target.resolve().parent
    layout = Layout(folder.resolve())
    if not layout.record.is_file():
        raise ConfigError("--out", str(folder), "holds no fleet.json: name the folder "
                          "'crawlguard fleet generate' wrote (--out DIR, or give DIR itself)")
    return layout, fleet.rigs


@dataclass
class FleetClient:
    """The central host's credentials, for any rig of the fleet."""

    layout: Layout
    timeout: float = TIMEOUT_S

    def __post_init__(self) -> None:
        tls = self.layout.central_tls
        self.tls: ssl.SSLContext = TlsFiles(cert=tls / "client.crt", key=tls / "client.key",
                                            ca=tls / "ca.crt").client_context()

    def token(self, rig: Rig) -> str:
        token = read_token(self.layout.central_token(rig.name))
        if token is None:
            raise ConfigError("RIG", rig.name, f"no token at "
                              f"{self.layout.central_token(rig.name)}: run 'crawlguard fleet "
                              "generate' for this rig first")
        return token

    def sidecar(self, rig: Rig) -> SidecarClient:
        return SidecarClient(rig.sidecar_url, self.token(rig), timeout=self.timeout,
                             tls=self.tls)

    def exporter(self, rig: Rig) -> dict[str, Any]:
        url = f"{rig.exporter_url}/metrics"
        out: dict[str, Any] = {"url": url, "ok": False, "error": None, "shards": {}}
        try:
            answer = http.get(url, token=self.token(rig), timeout=self.timeout, tls=self.tls)
        except HttpError as exc:
            out["error"] = exc.why
            return out
        except CrawlguardError as exc:
            out["error"] = str(exc)
            return out
        if answer.status != 200:
            out["error"] = f"HTTP {answer.status}"
            return out
        try:
            out["shards"] = shards_served(answer.text)
        except ValueError as exc:
            out["error"] = f"not Prometheus text: {exc}"
            return out
        out["ok"] = True
        return out

    def status(self, rig: Rig) -> dict[str, Any]:
        sidecar: dict[str, Any] = {"url": rig.sidecar_url, "ok": False, "error": None}
        view: dict[str, Any] = {"action": None, "paused": None, "shards": [], "unreadable": []}
        try:
            with self.sidecar(rig) as client:
                view.update(ladders(client.shards()))
            sidecar["ok"] = True
        except CrawlguardError as exc:
            sidecar["error"] = str(exc)
        exporter = self.exporter(rig)
        return {"rig": rig.name, "host": rig.host,
                "reachable": bool(sidecar["ok"] and exporter["ok"]),
                "exporter": exporter, "sidecar": sidecar, **view}

    def status_all(self, rigs: tuple[Rig, ...]) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(rigs)))) as pool:
            return list(pool.map(self.status, rigs))


def ladders(data: Any) -> dict[str, Any]:
    """The parts of a sidecar's ``GET /v1/shards`` the table shows, checked: a rig that
    answers something else is unreachable in effect, never a traceback here."""
    if not isinstance(data, dict):
        raise SidecarUnavailable("GET /v1/shards: not a JSON object")
    shards, unreadable = data.get("shards"), data.get("unreadable", [])
    views = shards if isinstance(shards, list) else None
    if views is None or not all(
            isinstance(v, dict) and isinstance(v.get("shard"), str)
            and isinstance(v.get("crawls"), int) and isinstance(v.get("rung"), str)
            and isinstance(v.get("env"), dict) and (v.get("pending") is None or (
                isinstance(v["pending"], dict) and {"id", "rung"} <= set(v["pending"])))
            for v in views):
        raise SidecarUnavailable("GET /v1/shards: not the sidecar's answer (shards)")
    if not isinstance(unreadable, list) or not all(
            isinstance(u, dict) and isinstance(u.get("shard"), str) for u in unreadable):
        raise SidecarUnavailable("GET /v1/shards: not the sidecar's answer (unreadable)")
    return {"action": data.get("action"), "paused": bool(data.get("paused")),
            "shards": views, "unreadable": unreadable}


def shards_served(text: str) -> dict[str, dict[str, Any]]:
    """Every shard an exporter serves counters of (they outlive workers), its genes, and
    the device of its live worker (None when none runs): what the sidecar's ladders lack
    for a shard that never crawled."""
    shards: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            shard = sample.labels.get("shard")
            if not shard:
                continue
            entry = shards.setdefault(shard, {"genes": 0, "device": None})
            if sample.name == "bfm_genes_total" and math.isfinite(sample.value):
                entry["genes"] += int(sample.value)
            elif sample.name == "bfm_worker_info":
                entry["device"] = sample.labels.get("device")
    return dict(sorted(shards.items()))

