"""Property-based fuzzing of the API on a real server: invalid input never gives a
5xx and never acts. A real worker is registered for the shard every generated
request aims at; it must never be signalled, and no ladder may be written."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawlguard.kernel.errors import UnsafeNameError
from crawlguard.kernel.names import ShardName
from crawlguard.sidecar.ladder import KNOWN_ALERTS
from tests.sidecar.conftest import Live, Worker

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
VICTIM = "victim"
IGNORED = {"unknown_alertname", "unsafe_shard", "malformed_alert"}
FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
# No NaN or infinity: httpx refuses to encode them, so they would never reach the server.
finite = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20)


def _unsafe(value: str) -> bool:
    try:
        ShardName.parse(value)
    except UnsafeNameError:
        return True
    return False


unknown_names = text.filter(lambda s: s not in KNOWN_ALERTS)
unsafe_shards = text.filter(_unsafe)
# Every alert is wrong in meaning (unknown name, unsafe or missing shard) or in
# structure (random labels); never a known alert for a safe shard.
bad_labels = st.one_of(
    st.builds(lambda n: {"alertname": n, "shard": VICTIM}, unknown_names),
    st.builds(lambda n, s: {"alertname": n, "shard": s}, st.sampled_from(sorted(KNOWN_ALERTS)),
              unsafe_shards),
    st.builds(lambda n: {"alertname": n}, st.sampled_from(sorted(KNOWN_ALERTS))),
    st.dictionaries(text, json_values, max_size=4),
)
starts = st.one_of(
    st.datetimes(min_value=dt.datetime(1, 1, 2), timezones=st.just(dt.timezone.utc)).map(
        lambda d: d.isoformat()),
    text, st.integers(), st.none())
bad_alerts = st.fixed_dictionaries({
    "status": st.sampled_from(["firing", "resolved"]) | text,
    "labels": bad_labels,
    "startsAt": starts,
    "fingerprint": st.from_regex(r"\A[0-9a-f]{16}\Z") | text,
}, optional={"annotations": st.dictionaries(text, json_values, max_size=3),
             "endsAt": starts})
bad_payloads = st.fixed_dictionaries({
    "version": st.sampled_from(["4", "4", "3", 4, None]),
    "status": st.sampled_from(["firing", "resolved"]) | text,
    "alerts": st.lists(bad_alerts, max_size=5),
}, optional={"groupKey": json_values, "truncatedAlerts": json_values,
             "commonLabels": json_values})


def _valid_rung(body: Any) -> bool:
    return (isinstance(body, dict) and body.get("rung") in ("restart", "cpu", "next")
            and set(body) <= {"rung", "reason"} and isinstance(body.get("reason", ""), str)
            and len(body.get("reason", "")) <= 500)


def _valid_reason(body: Any) -> bool:
    return body is None or (isinstance(body, dict) and set(body) <= {"reason"}
                            and isinstance(body.get("reason", ""), str))


def test_invalid_input_never_5xx_and_never_acts(
        sidecar_thread: Callable[..., Live], spawn_worker: Callable[..., Worker],
        state_dir: Path) -> None:
    live = sidecar_thread()
    victim = spawn_worker(VICTIM)

    def check(r: Any) -> None:
        assert r.status_code < 500, r.text
        if r.status_code == 202:
            assert {d["decision"] for d in r.json()["decisions"]} <= IGNORED, r.text

    @FUZZ
    @given(bad_payloads | json_values)
    def alerts(body: Any) -> None:
        check(live.client.post("/v1/alerts", json=body))

    @FUZZ
    @given(st.binary(max_size=200), st.sampled_from(["application/json", "text/plain", ""]))
    def raw(body: bytes, ctype: str) -> None:
        headers = {"Content-Type": ctype} if ctype else {}
        check(live.client.post("/v1/alerts", content=body, headers=headers))

    @FUZZ
    @given(json_values.filter(lambda b: not _valid_rung(b)), text)
    def rung(body: Any, shard: str) -> None:
        check(live.client.post(f"/v1/shards/{VICTIM}/rung", json=body))
        if not _valid_reason(body):
            check(live.client.post(f"/v1/shards/{quote(shard, safe='')}/reset", json=body))
        check(live.client.get(f"/v1/shards/{quote(shard, safe='')}"))

    @FUZZ
    @given(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(
        str.strip))  # h11 refuses surrounding blanks before they reach the server
    def tokens(header: str) -> None:
        # Without a body: the 401 is answered before any body is read, and the connection
        # closed, so body bytes still on their way would reset it under the client before
        # it reads the answer (TCP, not the sidecar; test_e2e sends a wrong token with a
        # valid payload). The one check guards every /v1 route alike.
        auth = {"Authorization": header}
        assert live.client.post("/v1/alerts", headers=auth).status_code == 401
        assert live.client.get("/v1/shards", headers=auth).status_code == 401

    alerts()
    raw()
    rung()
    tokens()
    assert victim.alive() and victim.terms == []
    assert not list(state_dir.glob("shards/*/ladder.json"))
    metrics = live.metrics()
    assert "crawlguard_sidecar_rungs_total{" not in metrics
    assert "crawlguard_sidecar_crawls_total{" not in metrics
