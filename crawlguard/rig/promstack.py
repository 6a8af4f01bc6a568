"""Real Prometheus and Alertmanager for `crawlguard up`, configured from deploy/.

The configurations are the shipped ones (deploy/prometheus/prometheus.yml,
deploy/alertmanager/alertmanager.yml, rules/crawlguard.rules.yml), loaded and
changed only where a rig's run differs: the ports chosen for this run, the
absolute paths of the rules and of the token file, and optionally shorter
intervals (the demo's scaled time). They are written into the run directory
under the state dir, next to the token file (mode 600) Alertmanager reads.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crawlguard import deploy
from crawlguard.kernel.errors import ConfigError
from crawlguard.kernel.promconfig import SIDECAR_RECEIVER, load_yaml
from crawlguard.rules.files import RULES_FILE, RUNBOOK_URL

RESEND_DELAY_S = 5.0
"""How often ``up``'s Prometheus re-sends a firing alert: the shipped evaluation interval,
so that an Alertmanager ``up`` restarted hears of a firing crawl within one interval."""
ALERT_PATHS = ("auto", "embedded", "prometheus", "external")
"""external: alerts arrive from an Alertmanager elsewhere (a fleet's central host)."""


@dataclass(frozen=True)
class Shipped:
    prometheus: Path
    alertmanager: Path
    rules: Path

    @classmethod
    def find(cls) -> Shipped | None:
        """The installed files (package data of ``crawlguard.deploy`` and
        ``crawlguard.rules``); None when this installation lacks one."""
        found = cls(deploy.PROMETHEUS, deploy.ALERTMANAGER, RULES_FILE)
        return None if found.missing() else found

    def missing(self) -> list[Path]:
        return [p for p in (self.prometheus, self.alertmanager, self.rules) if not p.is_file()]


def why_missing() -> str:
    """One line for a person: which shipped file this installation lacks."""
    lacking = Shipped(deploy.PROMETHEUS, deploy.ALERTMANAGER, RULES_FILE).missing()
    return "this installation lacks " + ", ".join(str(p) for p in lacking)


@dataclass(frozen=True)
class Binaries:
    prometheus: str
    alertmanager: str

    @classmethod
    def find(cls) -> Binaries | None:
        prom = shutil.which("prometheus")
        # Debian names the binary prometheus-alertmanager; upstream, alertmanager.
        am = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        return cls(prom, am) if prom and am else None


@dataclass(frozen=True)
class AmTiming:
    """Alertmanager timings of the sidecar route, in seconds."""

    group_wait: float
    group_interval: float
    repeat_interval: float

    @classmethod
    def scaled_to(cls, interval: float) -> AmTiming:
        """Timings for a shortened scrape/evaluation interval (scaled time)."""
        return cls(group_wait=interval, group_interval=2 * interval,
                   repeat_interval=max(10.0, 20 * interval))

    def as_config(self) -> dict[str, str]:
        return {"group_wait": duration(self.group_wait),
                "group_interval": duration(self.group_interval),
                "repeat_interval": duration(self.repeat_interval)}


def duration(seconds: float) -> str:
    """A Prometheus duration (``5s``, ``500ms``) for ``seconds``."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"



def rig_rules(shipped: Shipped, runbook_url: str) -> dict[str, Any]:
    """The shipped rules with every alert's runbook link on this rig's sidecar."""
    return rebase_runbook(load_yaml(shipped.rules), runbook_url)


def rebase_runbook(rules: dict[str, Any], runbook_url: str) -> dict[str, Any]:
    """``rules`` (a rules file's document) with every alert's runbook link moved from the
    shipped base (the sidecar's default address) to ``runbook_url``, anchors kept."""
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            url = rule.get("annotations", {}).get("runbook_url")
            base = RUNBOOK_URL
            if isinstance(url, str) and url.startswith(base):
                rule["annotations"]["runbook_url"] = runbook_url + url[len(base):]
    return rules


def prometheus_config(shipped: Shipped, exporter: str, sidecar: str, alertmanager: str,
                      interval: float | None, rules: Path | None = None) -> dict[str, Any]:
    """The shipped Prometheus config with this run's targets (``host:port``) and rules
    (default: the shipped rules file)."""
    cfg = load_yaml(shipped.prometheus)
    if interval is not None:
        glob = cfg.setdefault("global", {})
        glob["scrape_interval"] = glob["evaluation_interval"] = duration(interval)
        glob["scrape_timeout"] = duration(interval * 0.8)
    cfg["rule_files"] = [str((rules or shipped.rules).resolve())]
    cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    targets = {"crawlguard-exporter": exporter, "crawlguard-sidecar": sidecar}
    for job in cfg.get("scrape_configs", []):
        if job.get("job_name") in targets:
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    return cfg


def alertmanager_config(shipped: Shipped, sidecar_url: str, token_file: Path,
                        timing: AmTiming | None) -> dict[str, Any]:
    """The shipped Alertmanager config pointed at this run's sidecar and token file."""
    cfg = load_yaml(shipped.alertmanager)
    found = False
    for route in cfg.get("route", {}).get("routes", []):
        if route.get("receiver") == SIDECAR_RECEIVER and timing is not None:
            route.update(timing.as_config())
    for receiver in cfg.get("receivers", []):
        if receiver.get("name") != SIDECAR_RECEIVER:
            continue
        for hook in receiver.get("webhook_configs", []):
            found = True
            hook["url"] = f"{sidecar_url}/v1/alerts"
            auth = hook.setdefault("http_config", {}).setdefault("authorization", {})
            auth["type"] = "Bearer"
            auth["credentials_file"] = str(token_file.resolve())
    if not found:
        raise ConfigError("shipped config", str(shipped.alertmanager),
                          f"has no webhook receiver {SIDECAR_RECEIVER!r}")
    return cfg


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# generated by crawlguard up from the shipped file; edits are lost\n"
                    + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def prometheus_argv(binary: str, config: Path, data: Path, port: int,
                    resend_delay: float = RESEND_DELAY_S) -> list[str]:
    # Prometheus re-sends a firing alert only every resend delay (1m by default): an
    # Alertmanager restarted by `up` (it starts empty) learnt of a crawl that late.
    return [binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
            f"--rules.alert.resend-delay={duration(resend_delay)}"]


def alertmanager_argv(binary: str, config: Path, data: Path, port: int) -> list[str]:
    # An empty cluster address turns off HA gossip: one rig, one Alertmanager,
    # and nothing listening on 9094.
    return [binary, f"--config.file={config}", f"--storage.path={data}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
            "--log.level=warn"]


def _missing_binaries() -> str:
    absent = [name for name, found in (
        ("prometheus", shutil.which("prometheus")),
        ("prometheus-alertmanager (or alertmanager)",
         shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")))
        if not found]
    return f"{' and '.join(absent)} not on PATH"


def resolve_alert_path(requested: str) -> tuple[str, str]:
    """``(path, why)``: auto means real Prometheus + Alertmanager when both are installed."""
    if requested not in ALERT_PATHS:
        raise ConfigError("--alert-path", requested, f"must be one of {', '.join(ALERT_PATHS)}")
    if requested == "external":
        return "external", ("alerts from an Alertmanager elsewhere (a fleet's central host); "
                            "no Prometheus, Alertmanager or evaluation here")
    binaries, shipped = Binaries.find(), Shipped.find()
    if requested == "embedded":
        return "embedded", "embedded evaluation of the shipped rules (asked for)"
    if binaries and shipped:
        return "prometheus", (f"real Prometheus ({binaries.prometheus}) and Alertmanager "
                              f"({binaries.alertmanager}) with the shipped rules")
    reasons = []
    if not binaries:
        reasons.append(_missing_binaries())
    if not shipped:
        reasons.append(why_missing())
    missing = "; ".join(reasons)
    if requested == "prometheus":
        raise ConfigError("--alert-path", requested, missing)
    return "embedded", f"embedded evaluation of the shipped rules ({missing})"
