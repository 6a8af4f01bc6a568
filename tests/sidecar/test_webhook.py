"""Alertmanager v4 payload validation and triage."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from crawlguard.sidecar.webhook import WebhookPayload, triage
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
    lambda p: p["alerts"][0].update(startsAt="yesterday"),
    lambda p: p["alerts"][0].update(startsAt="2024-05-01T10:00:00"),  # no zone
    lambda p: p["alerts"][0].pop("fingerprint"),
    lambda p: p["alerts"][0].update(fingerprint="../../x"),
    lambda p: p["alerts"][0]["labels"].update(shard=7),
    lambda p: p["alerts"][0].update(labels=["shard"]),
    lambda p: p.update(alerts={"0": {}}),
])
def test_structural_errors_refuse_the_whole_payload(mutate: Any) -> None:
    body = payload(alert("a", 1.0, "f1"), alert("b", 1.0, "f2"))
    mutate(body)
    with pytest.raises(ValidationError):
        WebhookPayload.model_validate(body)


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
