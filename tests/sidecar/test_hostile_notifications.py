"""Hostile webhook notifications against a real sidecar (issue 18, items 6 and 8).

Each alert of a notification is judged alone: one bad alert (a shard name that
differs only in case from a registered one, a malformed alert) is refused, recorded
and counted, and the legitimate alerts beside it are judged; only a payload that is
no v4 notification at all is refused whole. Alerts for shards the state dir does not
know create no state and no series, a notification has a bounded number of alerts,
and the event loop stays free while the worst notification taken is judged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from crawlguard.kernel import promconfig
from crawlguard.kernel.formats import auditlog
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import register_worker
from crawlguard.sidecar.webhook import MAX_ALERTS
from tests.helpers import REPO, wait_until
from tests.sidecar.conftest import GONE, Live, alert, known, laddered, payload


def _audit(state_dir: Path) -> list[dict[str, Any]]:
    lines, bad = auditlog.read(state_dir / "audit.jsonl")
    assert bad == 0
    return [e.model_dump() for e in lines if e.event == "alert"]


def _series(live: Live, name: str) -> list[str]:
    return [line for line in live.metrics().splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")]


def test_a_case_twin_of_a_shard_is_refused_alone(sidecar_thread: Callable[..., Live],
                                                 state_dir: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    known(state_dir, "victim")
    live = sidecar_thread()
    now = time.time()
    got = live.post_alerts(payload(alert("VICTIM", now, "f1"), alert("victim", now, "f2")))
    decisions = [(d["shard"], d["decision"]) for d in got["decisions"]]
    assert decisions == [(None, "unsafe_shard"), ("victim", "rung")]
    assert "differs only in case" in got["decisions"][0]["note"]
    live.settled("victim")
    assert sorted(p.name for p in (state_dir / "shards").iterdir()) == ["victim"]
    assert [(a["shard"], a["decision"]) for a in _audit(state_dir)] == decisions
    assert 'crawlguard_sidecar_alerts_ignored_total{reason="unsafe_shard"} 1.0' in live.metrics()
    warned = [r for r in caplog.records if "refused one by one" in r.getMessage()]
    assert len(warned) == 1 and "1 unsafe_shard" in warned[0].getMessage()
    # Alertmanager's repeat of the same notification: audited and counted again, not
    # warned about again, and the victim's alert is a duplicate.
    again = live.post_alerts(payload(alert("VICTIM", now, "f1"), alert("victim", now, "f2")))
    assert [d["decision"] for d in again["decisions"]] == ["unsafe_shard", "duplicate"]
    assert 'crawlguard_sidecar_alerts_ignored_total{reason="unsafe_shard"} 2.0' in live.metrics()
    assert len([r for r in caplog.records if "refused one by one" in r.getMessage()]) == 1
    assert len(_audit(state_dir)) == 4


def test_a_malformed_alert_is_refused_and_the_rest_judged(
        sidecar_thread: Callable[..., Live], state_dir: Path) -> None:
    known(state_dir, "good")
    live = sidecar_thread()
    now = time.time()
    broken = {**alert("good", now, "f1"), "startsAt": "yesterday"}
    got = live.post_alerts(payload(broken, alert("good", now, "f2"), 42))
    assert got["received"] == 3
    assert [(d["shard"], d["decision"]) for d in got["decisions"]] == [
        (None, "malformed_alert"), ("good", "rung"), (None, "malformed_alert")]
    assert got["decisions"][0]["note"].startswith("startsAt:")
    assert got["decisions"][0]["fingerprint"] == "f1"
    audit = _audit(state_dir)
    assert [a["decision"] for a in audit] == ["malformed_alert", "malformed_alert", "rung"]
    assert audit[0]["shard_label"] == "good"  # a person sees whose alert was refused
    assert 'crawlguard_sidecar_alerts_ignored_total{reason="malformed_alert"} 2.0' in (
        live.metrics())


@pytest.mark.parametrize("body", [
    b"{", b"[]", b'{"version": "3", "status": "firing", "alerts": []}',
    b'{"version": "4", "status": "firing"}', b'{"version": "4", "status": "firing", '
                                             b'"alerts": {"0": {}}}'])
def test_only_a_body_that_is_no_v4_notification_is_refused_whole(
        sidecar_thread: Callable[..., Live], state_dir: Path, body: bytes) -> None:
    live = sidecar_thread()
    r = live.client.post("/v1/alerts", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert not (state_dir / "audit.jsonl").exists()


def test_unknown_shards_create_no_state(sidecar_thread: Callable[..., Live],
                                        state_dir: Path) -> None:
    known(state_dir, "real")
    live = sidecar_thread()
    now = time.time()
    strays = [alert(f"stray{i}", now, f"s{i}") for i in range(200)]
    got = live.post_alerts(payload(*strays, alert("real", now, "r1")))
    assert {d["decision"] for d in got["decisions"][:-1]} == {"unknown_shard"}
    assert got["decisions"][-1]["decision"] == "rung"
    live.settled("real")
    assert sorted(p.name for p in (state_dir / "shards").iterdir()) == ["real"]
    shard_series = [line for line in live.metrics().splitlines()
                    if 'shard="stray' in line]
    assert shard_series == []
    assert 'crawlguard_sidecar_alerts_ignored_total{reason="unknown_shard"} 200.0' in (
        live.metrics())
    assert sum(1 for a in _audit(state_dir) if a["decision"] == "unknown_shard") == 200
    assert live.client.get("/v1/shards/stray0").status_code == 404
    # A shard the state dir learns of later is judged from then on.
    register_worker(StateDir(state_dir), "stray0", GONE)
    again = live.post_alerts(payload(alert("stray0", now, "s0")))
    assert again["decisions"][0]["decision"] == "rung"


def test_more_alerts_than_the_bound_are_refused_whole_with_413(
        sidecar_thread: Callable[..., Live], state_dir: Path) -> None:
    laddered(state_dir, "s0")
    live = sidecar_thread()
    now = time.time()
    body = payload(*[alert("s0", now, f"f{i}") for i in range(MAX_ALERTS + 1)])
    r = live.client.post("/v1/alerts", json=body)
    assert r.status_code == 413 and f"at most {MAX_ALERTS}" in r.json()["detail"]
    assert 'crawlguard_sidecar_invalid_requests_total{reason="too_many_alerts"} 1.0' in (
        live.metrics())
    assert _series(live, "crawlguard_sidecar_alerts_received_total") == []
    assert not (state_dir / "audit.jsonl").exists()
    assert live.shard("s0")["history"] == []
    body["alerts"].pop()
    assert live.client.post("/v1/alerts", json=body).status_code == 202


def test_the_event_loop_stays_free_during_the_worst_notification(
        sidecar_proc: Callable[..., Live], state_dir: Path) -> None:
    """MAX_ALERTS new crawls of as many registered shards: a ladder write and a rung
    each, the most one request can cost. /healthz and /metrics (whose collector reads
    every ladder) answer many times while ``crawlguard sidecar`` judges it."""
    shards = [f"k{i}" for i in range(MAX_ALERTS)]
    known(state_dir, *shards)
    live = sidecar_proc()
    now = time.time()
    body = payload(*[alert(s, now, f"f{i}") for i, s in enumerate(shards)])
    answer: list[httpx.Response] = []
    poster = threading.Thread(target=lambda: answer.append(
        live.client.post("/v1/alerts", json=body, timeout=120)))
    answered = {"/healthz": 0, "/metrics": 0}
    with httpx.Client(base_url=live.url, timeout=10, trust_env=False) as probe:
        poster.start()
        # The notification is being judged once its first ladder has been written.
        wait_until(lambda: any(state_dir.glob("shards/*/ladder.json")) or answer,
                   what="the notification to be judged")
        while not answer and min(answered.values()) < 5:
            for path in answered:
                assert probe.get(path).status_code == 200
                if not answer:
                    answered[path] += 1
    poster.join(120)
    assert answer[0].status_code == 202
    assert {d["decision"] for d in answer[0].json()["decisions"]} == {"rung"}
    assert min(answered.values()) == 5, answered


def test_the_shipped_alertmanager_truncates_groups_at_the_bound() -> None:
    """Alertmanager sends at most MAX_ALERTS alerts a notification (the rest are counted in
    truncatedAlerts) instead of a notification the sidecar refuses whole."""
    shipped = promconfig.load_yaml(REPO / "deploy" / "alertmanager" / "alertmanager.yml")
    hook = promconfig.shipped_webhook(shipped, promconfig.SIDECAR_RECEIVER)
    assert hook["max_alerts"] == MAX_ALERTS
