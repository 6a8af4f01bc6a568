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

Each alert is judged alone. Only a payload that is not an Alertmanager v4
notification at all (not JSON, another version, no ``alerts`` list) is refused
whole, with 422: Alertmanager does not retry a 4xx, so refusing a notification
for one bad alert would lose the good ones beside it. An alert that does not
validate (``malformed_alert``), names an alert crawlguard does not act on
(``unknown_alertname``) or carries an unsafe shard label (``unsafe_shard``) is
refused alone, recorded and counted, and the rest of the notification is
judged; so is one for a shard the state dir does not know (``unknown_shard``,
``crawlguard.sidecar.judging``). Unknown extra fields are ignored, as
Alertmanager may add some. ``fingerprint`` is required: both Alertmanager and
crawlguard's embedded evaluator always send it, and exact repeats are
recognised by it.

A notification of more than ``MAX_ALERTS`` alerts is refused whole before any
alert is validated (``TooManyAlerts``, answered 413), so the cost of one request
is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
)

from crawlguard.kernel.errors import TooManyAlerts, UnsafeNameError
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.workers import WorkerIdentity

from .ladder import KNOWN_ALERTS, OOM_ALERT, AlertFacts

MAX_ALERTS = 1000
"""The most alerts the sidecar judges in one notification (more: 413). The shipped
route groups by shard and pid, so a notification holds one worker's alerts, a
handful; even a route grouped by alertname alone over a 300-shard rig (three alert
names each) stays below it. Each alert costs the notification a shard lookup and
an audit line, and an alert for a known shard a ladder write, so 1,000 keeps the
worst request to seconds (bench/bench_hostile.py), where the body limit alone
(1 MiB) let 6,000 alerts through. The shipped Alertmanager configuration sets
``max_alerts`` to it, so Alertmanager truncates a larger group instead."""
FIELD_CHARS = 128
"""What is kept of a malformed alert's text fields for its answer and audit line."""


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


class MalformedAlert(BaseModel):
    """An alert of a notification that did not validate: refused alone. Its fields are
    what could be read of it as text, cut to ``FIELD_CHARS``; ``error`` says why."""

    alertname: str = ""
    status: str = ""
    fingerprint: str = ""
    shard: str = ""
    error: str

    @classmethod
    def of(cls, value: Any, exc: ValidationError) -> MalformedAlert:
        raw: dict[Any, Any] = value if isinstance(value, dict) else {}
        found = raw.get("labels")
        labels: dict[Any, Any] = found if isinstance(found, dict) else {}

        def text(v: Any) -> str:
            return v[:FIELD_CHARS] if isinstance(v, str) else ""

        errors = [f"{'.'.join(str(p) for p in e['loc']) or 'alert'}: {e['msg']}"
                  for e in exc.errors(include_url=False)[:3]]
        return cls(alertname=text(labels.get("alertname")), status=text(raw.get("status")),
                   fingerprint=text(raw.get("fingerprint")), shard=text(labels.get("shard")),
                   error="; ".join(errors))


def _alone(value: Any) -> Alert | MalformedAlert:
    try:
        return Alert.model_validate(value)
    except ValidationError as exc:
        return MalformedAlert.of(value, exc)


AlertSlot = Annotated[Alert | MalformedAlert, PlainValidator(_alone, json_schema_input_type=Alert)]
"""One alert of a notification, validated alone (the schema shows ``Alert``)."""


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
    alerts: list[AlertSlot]

    @field_validator("alerts", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > MAX_ALERTS:
            raise TooManyAlerts(len(value), MAX_ALERTS)
        return value


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


def triage(alert: Alert | MalformedAlert) -> Triage:
    """Sort one alert into ladder input or an ignored one."""
    if isinstance(alert, MalformedAlert):
        return Triage(alert.alertname, alert.status, alert.fingerprint, None, None,
                      "malformed_alert", alert.error)
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
