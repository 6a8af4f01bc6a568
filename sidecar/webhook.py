"""The Alertmanager webhook payload (version 4) and what the ladder takes from it.

Alertmanager POSTs one JSON object per notification of a group::

    {"version": "4", "groupKey": "...", "truncatedAlerts": 0, "status": "firing",
     "receiver": "crawlguard", "groupLabels": {}, "commonLabels": {},
     "commonAnnotations": {}, "externalURL": "http://...",
     "alerts": [{"status": "firing", "labels": {"alertname": "BFMShardCrawl",
                 "shard": "confluence", ...}, "annotations": {...},
                 "startsAt": "2024-05-01T10:00:00.123456789Z",
                 "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "...",
                 "fingerprint": "c4f8a1b2d3e4f506"}]}

Validation is strict on structure (the whole payload is refused with 422 and
nothing changes when any alert is malformed: a half-applied notification
would be re-delivered and judged differently) and lenient on meaning: an
unknown alertname or an unsafe shard label refuses that one alert only, so the
rest of the payload still counts. Unknown extra fields are ignored, as
Alertmanager may add some. ``fingerprint`` is required: both Alertmanager and
crawlguard's embedded evaluator always send it, and exact repeats are
recognised by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from crawlguard.kernel.errors import UnsafeNameError
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.workers import WorkerIdentity

from .ladder import KNOWN_ALERTS, OOM_ALERT, AlertFacts

MAX_ALERTS = 10_000


class Alert(BaseModel):
    """One alert of a notification."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(max_length=256)
    annotations: dict[str, str] = Field(default_factory=dict, max_length=256)
    starts_at: AwareDatetime = Field(alias="startsAt")
    ends_at: AwareDatetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9]+$")


class WebhookPayload(BaseModel):
    """An Alertmanager webhook notification, version 4."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    version: Literal["4"]
    group_key: str = Field(default="", alias="groupKey")
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[Alert] = Field(max_length=MAX_ALERTS)


@dataclass(frozen=True)
class Triage:
    """One alert sorted: ``facts`` and ``shard`` when the ladder should see it,
    otherwise ``ignored`` says why (``unknown_alertname``, ``unsafe_shard``)."""

    alertname: str
    status: str
    fingerprint: str
    shard: str | None
    facts: AlertFacts | None
    ignored: str | None = None
    note: str = ""


def _pid(raw: str | None) -> int | None:
    """The ``pid`` label as a pid; a missing or odd one is no evidence either way."""
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        return None
    return int(raw) or None


def triage(alert: Alert) -> Triage:
    """Sort one validated alert into ladder input or an ignored one."""
    name = alert.labels.get("alertname", "")
    raw_shard = alert.labels.get("shard")
    if name not in KNOWN_ALERTS:
        return Triage(name, alert.status, alert.fingerprint, None, None, "unknown_alertname",
                      f"alertname {name!r} is not one crawlguard acts on")
    try:
        shard = ShardName.parse(raw_shard)
    except UnsafeNameError as exc:
        return Triage(name, alert.status, alert.fingerprint, None, None, "unsafe_shard", str(exc))
    worker = None
    if name == OOM_ALERT:
        # The dead worker's identity, as the exporter's OOM series labels it.
        worker = alert.labels.get("worker", "")
        if WorkerIdentity.from_key(worker) is None:
            return Triage(name, alert.status, alert.fingerprint, None, None, "unsafe_worker",
                          f"{OOM_ALERT} needs a worker label <pid>-<creation ms>, "
                          f"got {worker!r}")
    facts = AlertFacts(alertname=name, status=alert.status, fingerprint=alert.fingerprint,
                       starts_at=alert.starts_at.timestamp(), pid=_pid(alert.labels.get("pid")),
                       worker=worker)
    return Triage(name, alert.status, alert.fingerprint, shard, facts)


@dataclass(frozen=True)
class AlertOutcome:
    """How one alert of a notification was judged (the webhook's answer, per alert)."""

    alertname: str
    status: str
    fingerprint: str
    shard: str | None
    decision: str
    note: str = ""
