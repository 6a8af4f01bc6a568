"""The HTTP API on a real uvicorn server (in-process thread): contract, auth, limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from crawlguard.kernel.errors import StateError
from crawlguard.kernel.formats import auditlog
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import WorkerIdentity, register_worker
from tests.helpers import wait_until
from tests.kernel.test_state_schemas import HOSTILE, plant
from tests.sidecar.conftest import TOKEN, Live, Worker, alert, known, laddered, payload


def test_openapi_documents_every_endpoint_with_models(sidecar_thread: Callable[..., Live]) -> None:
    live = sidecar_thread()
    spec = live.client.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths) >= {"/v1/alerts", "/v1/shards", "/v1/shards/{shard}",
                          "/v1/shards/{shard}/rung", "/v1/shards/{shard}/reset", "/v1/pause",
                          "/v1/resume", "/healthz", "/metrics"}
    schemas = spec["components"]["schemas"]
    assert {"WebhookPayload", "ShardView", "ShardsView", "RungRequest", "AlertsAccepted",
            "HistoryEntry"} <= set(schemas)
    assert set(schemas["ShardView"]["required"]) >= {"shard", "crawls", "rung", "env", "history"}
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, ops in paths.items():
        for op in ops.values():
            assert bool(op.get("security")) == path.startswith("/v1"), path
    rung = paths["/v1/shards/{shard}/rung"]["post"]
    assert {"202", "401", "409", "413", "422"} <= set(rung["responses"])


def test_manual_rungs_reset_and_pause(sidecar_thread: Callable[..., Live],
                                      state_dir: Path) -> None:
    laddered(state_dir, "confluence")
    known(state_dir, "slack")
    live = sidecar_thread()
    r = live.client.post("/v1/shards/confluence/rung", json={"rung": "next", "reason": "drill"})
    assert r.status_code == 202 and r.json()["rung"] == "restart"
    state = live.settled("confluence")
    rung = state["history"][-1]
    assert (rung["kind"], rung["source"], rung["reason"], rung["outcome"]) == (
        "rung", "manual", "drill", "no_worker")
    assert rung["decided_at"] == rung["effective_at"]
    assert live.client.post("/v1/shards/confluence/rung",
                            json={"rung": "cpu"}).json()["env"] == {"BGEM3_DEVICE": "cpu"}
    live.settled("confluence")

    assert live.client.post("/v1/pause", json={"reason": "maintenance"}).json() == {
        "paused": True}
    r = live.client.post("/v1/shards/confluence/rung", json={"rung": "restart"})
    assert r.status_code == 409 and "paused" in r.json()["detail"]
    # Paused: alerts still count, nothing acts.
    known(state_dir, "confluence")
    d = live.post_alerts(payload(alert("confluence", time.time(), "ffff")))["decisions"][0]
    assert d["decision"] == "terminal"  # already on cpu
    d = live.post_alerts(payload(alert("slack", time.time(), "eeee")))["decisions"][0]
    assert d["decision"] == "refused"
    assert live.shard("slack")["crawls"] == 1 and live.shard("slack")["rung"] == "none"
    assert live.client.get("/healthz").json()["paused"] is True
    assert "crawlguard_sidecar_paused 1.0" in live.metrics()
    assert live.client.post("/v1/resume").json() == {"paused": False}

    r = live.client.post("/v1/shards/confluence/reset", json={"reason": "new driver"})
    assert r.status_code == 200
    view = r.json()
    assert (view["rung"], view["crawls"], view["env"]) == ("none", 0, {})
    assert view["history"][-1]["kind"] == "reset"
    listing = live.client.get("/v1/shards").json()
    assert listing["action"] == "ladder" and listing["paused"] is False
    assert [s["shard"] for s in listing["shards"]] == ["confluence", "slack"]


def test_pause_survives_a_restart_and_one_sidecar_per_state_dir(
        sidecar_thread: Callable[..., Live], state_dir: Path) -> None:
    laddered(state_dir, "a")
    live = sidecar_thread()
    live.client.post("/v1/pause")
    with pytest.raises(StateError, match="another crawlguard sidecar"):
        sidecar_thread()
    assert live.server is not None
    live.server.stop()
    again = sidecar_thread()
    assert again.client.get("/healthz").json()["paused"] is True
    r = again.client.post("/v1/shards/a/rung", json={"rung": "restart"})
    assert r.status_code == 409


def test_unknown_and_unsafe_alerts_are_refused_one_by_one(
        sidecar_thread: Callable[..., Live], state_dir: Path) -> None:
    known(state_dir, "good")
    live = sidecar_thread()
    now = time.time()
    body = payload(alert("good", now, "a1"), alert("../../etc", now, "a2"),
                   alert("good", now, "a3", name="Watchdog"), alert("NUL", now, "a4"))
    got = [(d["shard"], d["decision"]) for d in live.post_alerts(body)["decisions"]]
    assert got == [("good", "rung"), (None, "unsafe_shard"), (None, "unknown_alertname"),
                   (None, "unsafe_shard")]
    assert sorted(p.name for p in (state_dir / "shards").iterdir()) == ["good"]
    m = live.metrics()
    assert 'crawlguard_sidecar_alerts_ignored_total{reason="unsafe_shard"} 2.0' in m
    assert 'crawlguard_sidecar_alerts_received_total{alertname="other",status="firing"} 1.0' in m
    lines, bad = auditlog.read(state_dir / "audit.jsonl")
    audit = [e.model_dump() for e in lines if e.event == "alert"]
    assert bad == 0 and sorted(e["decision"] for e in audit) == [
        "rung", "unknown_alertname", "unsafe_shard", "unsafe_shard"]


def test_limits_and_validation(sidecar_thread: Callable[..., Live]) -> None:
    live = sidecar_thread()
    assert live.client.post("/v1/shards/a/rung", json={"rung": "cpu", "reason": "x" * 20000}
                            ).status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b'{"version": "4", "status": "firing", "alerts": ['
        for _ in range(2000):
            yield b'{"status": "firing", "labels": {"a": "' + b"x" * 1000 + b'"}},'
    # No Content-Length (chunked): counted as it arrives.
    assert live.client.post("/v1/alerts", content=chunks()).status_code == 413
    for bad in ({"rung": "gpu"}, {"rung": "cpu", "extra": 1}, {}, [], {"rung": None}):
        assert live.client.post("/v1/shards/a/rung", json=bad).status_code == 422
    for shard in ("..", "a..b", "con", "-x", "a" * 129):
        assert live.client.post(f"/v1/shards/{shard}/rung",
                                json={"rung": "cpu"}).status_code in (404, 422), shard
        assert live.client.get(f"/v1/shards/{shard}").status_code in (404, 422), shard
    assert 'crawlguard_sidecar_invalid_requests_total{reason="too_large"} 2.0' in live.metrics()
    assert live.client.get("/v1/shards").json()["shards"] == []


def test_rung_in_progress_blocks_manual_rungs_and_reset(
        sidecar_thread: Callable[..., Live], spawn_worker: Callable[..., Worker]) -> None:
    live = sidecar_thread(grace=30)
    w = spawn_worker("busy", "--ignore-term")
    live.post_alerts(payload(alert("busy", time.time(), "a1")))
    wait_until(lambda: w.terms, what="SIGTERM")  # it ignores it: the rung stays in progress
    assert live.shard("busy")["pending"]["worker"]["pid"] == w.proc.pid
    for path, body in (("rung", {"rung": "cpu"}), ("reset", {})):
        r = live.client.post(f"/v1/shards/busy/{path}", json=body)
        assert r.status_code == 409 and "in progress" in r.json()["detail"]
    d = live.post_alerts(payload(alert("busy", time.time(), "a2", name="BFMShardStalled")))
    assert d["decisions"][0]["decision"] == "in_progress"
    assert 'crawlguard_sidecar_rung_in_progress{shard="busy"} 1.0' in live.metrics()
    assert live.client.get("/healthz").json()["rungs_in_progress"] == 1
    w.kill()
    assert live.settled("busy")["history"][-1]["kind"] == "in_progress"


def test_insecure_no_token_mode_serves_v1_openly(sidecar_thread: Callable[..., Live]) -> None:
    live = sidecar_thread(token=None)
    with httpx.Client(base_url=live.url, trust_env=False) as anon:
        assert anon.get("/v1/shards").status_code == 200


def test_dead_registration_is_reported_not_retried(
        sidecar_thread: Callable[..., Live], state_dir: Path) -> None:
    register_worker(StateDir(state_dir), "gone", WorkerIdentity(2 ** 22 - 3, 1.0))
    live = sidecar_thread()
    live.post_alerts(payload(alert("gone", time.time(), "a1")))
    state = live.settled("gone")
    assert state["history"][-1]["outcome"] in ("already_gone", "identity_mismatch")
    assert state["pending"] is None and state["rung"] == "restart"
    assert TOKEN not in live.metrics() and TOKEN not in live.state_dir.joinpath(
        "audit.jsonl").read_text()


def test_suppressed_alerts_are_recorded_and_stay_duplicates_after_a_restart(
        sidecar_thread: Callable[..., Live], state_dir: Path) -> None:
    known(state_dir, "s")
    live = sidecar_thread()
    now = time.time()
    live.post_alerts(payload(alert("s", now, "a1")))
    live.settled("s")
    late = payload(alert("s", now - 5, "a2", name="BFMShardStalled"))
    assert live.post_alerts(late)["decisions"][0]["decision"] == "stale"
    on_disk = (state_dir / "shards" / "s" / "ladder.json").read_text()
    assert '"stale"' in on_disk  # written before the answer, not only kept in memory
    assert live.server is not None
    live.server.stop()
    again = sidecar_thread()
    assert again.shard("s")["history"][-1]["kind"] == "stale"
    path = state_dir / "shards" / "s" / "ladder.json"
    inode = path.stat().st_ino
    assert again.post_alerts(late)["decisions"][0]["decision"] == "duplicate"
    assert path.stat().st_ino == inode  # an exact repeat rewrites nothing


def test_a_corrupt_ladder_refuses_that_shard_only(
        sidecar_thread: Callable[..., Live], state_dir: Path) -> None:
    bad = state_dir / "shards" / "bad" / "ladder.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{half a file")
    known(state_dir, "bad", "good")
    live = sidecar_thread()
    now = time.time()
    # Not recorded, so not acknowledged: Alertmanager retries a 5xx.
    r = live.client.post("/v1/alerts", json=payload(alert("bad", now, "a1")))
    assert r.status_code == 500 and "not valid JSON" in r.json()["detail"]
    got = live.post_alerts(payload(alert("good", now, "a2")))
    assert [d["decision"] for d in got["decisions"]] == ["rung"]
    r = live.client.get("/v1/shards/bad")
    assert r.status_code == 500 and "not valid JSON" in r.json()["detail"]
    assert bad.read_text() == "{half a file"  # never overwritten by a guess
    listing = live.client.get("/v1/shards").json()   # the others are still listed
    assert [s["shard"] for s in listing["shards"]] == ["good"]
    assert [u["shard"] for u in listing["unreadable"]] == ["bad"]
    assert "not valid JSON" in listing["unreadable"][0]["error"]
    # reset repairs it (the bad file is kept beside it), and the retry is then judged.
    r = live.client.post("/v1/shards/bad/reset", json={"reason": "repair"})
    assert r.status_code == 200 and r.json()["rung"] == "none"
    assert [p.read_text() for p in bad.parent.glob("ladder.json.corrupt-*")] == [
        "{half a file"]
    got = live.post_alerts(payload(alert("bad", now, "a1")))
    assert [d["decision"] for d in got["decisions"]] == ["rung"]
    assert live.client.get("/v1/shards").json()["unreadable"] == []


def test_hostile_ladders_are_unreadable_for_their_shard_alone_and_reset_repairs_them(
        sidecar_thread: Callable[..., Live], state_dir: Path) -> None:
    """1e400, nesting too deep for a parser, a directory, wrong shapes: the sidecar starts,
    lists the other shards, marks each bad one, and reset repairs it."""
    bad = {f"bad-{i}": case for i, case in enumerate(sorted(HOSTILE))}
    for shard, case in bad.items():
        plant(state_dir, shard, case)
    laddered(state_dir, "good")
    (state_dir / "sidecar.json").write_text('{"paused": 1e400}')
    live = sidecar_thread()
    # A pause switch that cannot be read: paused until someone says otherwise.
    assert live.client.get("/healthz").json()["paused"] is True
    listing = live.client.get("/v1/shards").json()
    assert [s["shard"] for s in listing["shards"]] == ["good"]
    assert {u["shard"] for u in listing["unreadable"]} == set(bad)
    assert live.client.get("/metrics").status_code == 200
    for shard, case in bad.items():
        r = live.client.post(f"/v1/shards/{shard}/reset", json={"reason": "repair"})
        assert r.status_code == 200, (case, r.text)
        assert r.json()["rung"] == "none"
    listing = live.client.get("/v1/shards").json()
    assert listing["unreadable"] == [] and len(listing["shards"]) == len(bad) + 1
    assert live.client.post("/v1/resume").json() == {"paused": False}


def test_concurrent_deliveries_take_one_rung_per_episode(
        sidecar_thread: Callable[..., Live], state_dir: Path) -> None:
    known(state_dir, "a", "b", "c", "d")
    live = sidecar_thread()
    now = time.time()
    bodies = []
    for shard in ("a", "b", "c", "d"):
        crawl = payload(alert(shard, now, f"{shard}1"))
        # Began before the rung took effect (no worker: when it was decided).
        stalled = payload(alert(shard, now - 1, f"{shard}2", name="BFMShardStalled"))
        bodies += [crawl] * 6 + [stalled] * 4

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=live.url, trust_env=False,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            rs = await asyncio.gather(*(c.post("/v1/alerts", json=b) for b in bodies))
        return [r.status_code for r in rs]

    assert set(asyncio.run(burst())) == {202}
    for shard in ("a", "b", "c", "d"):
        state = live.settled(shard)
        assert state["crawls"] == 1 and state["rung"] == "restart"
        assert [h["kind"] for h in state["history"]].count("rung") == 1


def test_curl_default_content_type_is_accepted_as_json(
        sidecar_thread: Callable[..., Live], state_dir: Path) -> None:
    """`curl -d '{...}'` sends application/x-www-form-urlencoded: still a rung."""
    laddered(state_dir, "confluence")
    live = sidecar_thread()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = live.client.post("/v1/shards/confluence/rung", headers=form,
                         content=b'{"rung": "next", "reason": "curl"}')
    assert r.status_code == 202 and r.json()["rung"] == "restart"
    live.settled("confluence")
    # A real form body is still refused, and so is JSON under another declared type.
    assert live.client.post("/v1/shards/confluence/rung", headers=form,
                            content=b"rung=cpu").status_code == 422
    r = live.client.post("/v1/shards/confluence/rung", headers={"Content-Type": "text/plain"},
                         content=b'{"rung": "cpu"}')
    assert r.status_code == 422
    assert live.shard("confluence")["rung"] == "restart"


def test_unknown_shards_climb_no_ladder(sidecar_thread: Callable[..., Live],
                                        state_dir: Path) -> None:
    """A typo'd shard: a manual rung is 404 and creates nothing, and so is an alert for it
    refused alone (tests/sidecar/test_hostile_notifications.py); an alert for a shard with
    a ladder but no registered worker is recorded without a rung."""
    live = sidecar_thread()
    for path, body in (("rung", {"rung": "next"}), ("reset", {})):
        r = live.client.post(f"/v1/shards/typo/{path}", json=body)
        assert r.status_code == 404 and "unknown" in r.json()["detail"], r.text
    assert live.client.get("/v1/shards/typo").status_code == 404
    assert not (state_dir / "shards" / "typo").exists()
    d = live.post_alerts(payload(alert("typo", time.time(), "s0")))["decisions"][0]
    assert (d["shard"], d["decision"]) == ("typo", "unknown_shard")
    assert not (state_dir / "shards" / "typo").exists()
    laddered(state_dir, "stray")
    d = live.post_alerts(payload(alert("stray", time.time(), "s1")))["decisions"][0]
    assert d["decision"] == "no_worker"
    view = live.shard("stray")
    assert (view["rung"], view["crawls"], view["pending"], view["env"]) == ("none", 0, None, {})
    assert view["history"][-1]["kind"] == "no_worker"
