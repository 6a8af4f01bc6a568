"""Alertmanager webhook payloads (version "4"), built from evaluator alerts.

The sidecar receives the same JSON whether Alertmanager or the embedded path
sent it::

    {"version": "4", "groupKey": ..., "truncatedAlerts": 0, "status": "firing",
     "receiver": ..., "groupLabels": {...}, "commonLabels": {...},
     "commonAnnotations": {...}, "externalURL": ...,
     "alerts": [{"status", "labels", "annotations", "startsAt", "endsAt",
                 "generatorURL", "fingerprint"}, ...]}

Times are RFC 3339 in UTC with Go's trimmed fractional seconds; a firing
alert's ``endsAt`` is Go's zero time, as Alertmanager hides the end of an
alert that has not ended. ``groupKey`` has Alertmanager's shape: the route's
key, a colon, the group labels; ``ROUTE_KEY`` is the key Alertmanager gives
the sidecar route of ``deploy/alertmanager/alertmanager.yml``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from .evaluator import Alert

VERSION = "4"
ROUTE_KEY = '{}/{alertname=~"BFMShardCrawl|BFMShardStalled|BFMShardOOM"}'
RECEIVER = "crawlguard-sidecar"
GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(ts: float) -> str:
    """Unix seconds as Go's ``time.RFC3339Nano`` in UTC, at Prometheus'
    millisecond resolution."""
    millis = round(ts * 1000)
    dt = datetime.fromtimestamp(millis // 1000, tz=timezone.utc)
    frac = f"{millis % 1000:03d}".rstrip("0")
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def label_string(labels: Mapping[str, str]) -> str:
    """Prometheus' ``LabelSet.String()``: ``{a="x", b="y"}`` sorted by name."""
    body = ", ".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def group_key(group_labels: Mapping[str, str], route_key: str = ROUTE_KEY) -> str:
    return f"{route_key}:{label_string(group_labels)}"


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """Pairs present with the same value in every map (Alertmanager's common*)."""
    if not maps:
        return {}
    first = dict(maps[0])
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def alert_json(alert: Alert, generator_url: str) -> dict[str, Any]:
    ended = alert.resolved_at if alert.status == "resolved" else None
    return {
        "status": alert.status,
        "labels": dict(sorted(alert.labels.items())),
        "annotations": dict(sorted(alert.annotations.items())),
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": GO_ZERO_TIME if ended is None else rfc3339(ended),
        "generatorURL": generator_url,
        "fingerprint": alert.fingerprint,
    }


def build_payload(alerts: Sequence[Alert], group_labels: Mapping[str, str], *,
                  external_url: str, generator_url: str, receiver: str = RECEIVER,
                  route_key: str = ROUTE_KEY) -> dict[str, Any]:
    """One notification for one group, every alert of the group in it."""
    ordered = sorted(alerts, key=lambda a: sorted(a.labels.items()))
    firing = any(a.status == "firing" for a in ordered)
    return {
        "version": VERSION,
        "groupKey": group_key(group_labels, route_key),
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": receiver,
        "groupLabels": dict(sorted(group_labels.items())),
        "commonLabels": dict(sorted(_common([a.labels for a in ordered]).items())),
        "commonAnnotations": dict(sorted(_common([a.annotations for a in ordered]).items())),
        "externalURL": external_url,
        "alerts": [alert_json(a, generator_url) for a in ordered],
    }
