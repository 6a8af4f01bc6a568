"""Alertmanager v4 payload validation and triage."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from crawlguard.kernel.errors import TooManyAlerts
from crawlguard.sidecar.webhook import MAX_ALERTS, MalformedAlert, WebhookPayload, triage
from tests.sidecar.conftest import alert, payload


def test_a_real_alertmanager_payload_parses_with_nanoseconds() -> None:
    body = payload(alert("confluence", 1714557600.5, "c4f8a1b2d3e4f506"))
    p = WebhookPayload.model_validate(body)
    tri = triage(p.alerts[0])
    assert tri.shard == "confluence" and tri.facts is not None
    assert tri.facts.starts_at == pytest.approx(1714557600.5)
    assert tri.facts.key == "firing|c4f8a1b2d3e4f506|1714557600.500000"


@pytest.mark.parametrize("mutate", [
    lambda p: p.update(version="3"),
    lambda p: p.pop("alerts"),
    lambda p: p.update(status="pending"),
    lambda p: p.update(alerts={"0": {}}),
])
def test_only_a_payload_that_is_no_v4_notification_is_refused_whole(mutate: Any) -> None:
    body = payload(alert("a", 1.0, "f1"), alert("b", 1.0, "f2"))
    mutate(body)
    with pytest.raises(ValidationError):
        WebhookPayload.model_validate(body)


@pytest.mark.parametrize(("mutate", "where"), [
    (lambda a: a.update(startsAt="yesterday"), "startsAt"),
    (lambda a: a.update(startsAt="2024-05-01T10:00:00"), "startsAt"),  # no zone
    (lambda a: a.pop("fingerprint"), "fingerprint"),
    (lambda a: a.update(fingerprint="../../x"), "fingerprint"),
    (lambda a: a["labels"].update(shard=7), "labels.shard"),
    (lambda a: a.update(labels=["shard"]), "labels"),
    (lambda a: a.update(status="pending"), "status"),
])
def test_a_malformed_alert_is_refused_alone(mutate: Any, where: str) -> None:
    body = payload(alert("a", 1.0, "f1"), alert("b", 1.0, "f2"))
    mutate(body["alerts"][1])
    p = WebhookPayload.model_validate(body)
    first, second = map(triage, p.alerts)
    assert first.shard == "a" and first.facts is not None
    assert (second.shard, second.facts, second.ignored) == (None, None, "malformed_alert")
    assert second.note.startswith(where + ":"), second.note
    assert WebhookPayload.model_validate(payload(alert("a", 1.0, "f1"), 7, None)).alerts[1:] \
        == [MalformedAlert(error="alert: Input should be a valid dictionary or instance of "
                                 "Alert")] * 2


def test_more_alerts_than_the_bound_are_refused_before_any_is_read() -> None:
    many = [alert(f"s{i}", 1.0, f"f{i}") for i in range(MAX_ALERTS)]
    assert len(WebhookPayload.model_validate(payload(*many)).alerts) == MAX_ALERTS
    body = payload(*many)
    body["alerts"].append("not even an alert")
    with pytest.raises(TooManyAlerts) as info:
        WebhookPayload.model_validate(body)
    assert (info.value.count, info.value.limit) == (MAX_ALERTS + 1, MAX_ALERTS)


def test_meaning_errors_refuse_one_alert_only() -> None:
    p = WebhookPayload.model_validate(payload(
        alert("ok", 1.0, "f1"), alert("../etc", 1.0, "f2"), alert("con", 1.0, "f3"),
        alert("ok", 1.0, "f4", name="Watchdog"), {**alert("x", 1.0, "f5"), "labels": {
            "alertname": "BFMShardStalled"}}))
    got = [(t.shard, t.ignored) for t in map(triage, p.alerts)]
    assert got == [("ok", None), (None, "unsafe_shard"), (None, "unsafe_shard"),
                   (None, "unknown_alertname"), (None, "unsafe_shard")]


def test_extra_fields_from_newer_alertmanagers_are_ignored() -> None:
    body = payload(alert("a", 1.0, "f1"))
    body["newField"] = {"x": 1}
    body["alerts"][0]["silencedBy"] = []
    assert WebhookPayload.model_validate(body).alerts[0].fingerprint == "f1"


@pytest.mark.parametrize(("label", "pid"), [
    ("4242", 4242), (None, None), ("", None), ("0", None), ("-5", None), ("12a", None),
    ("٣", None), ("99999999999", None),
])
def test_the_pid_label_names_the_worker_or_nothing(label: str | None, pid: int | None) -> None:
    body = payload(alert("a", 1.0, "f1"))
    if label is not None:
        body["alerts"][0]["labels"]["pid"] = label
    tri = triage(WebhookPayload.model_validate(body).alerts[0])
    assert tri.facts is not None and tri.facts.pid == pid
