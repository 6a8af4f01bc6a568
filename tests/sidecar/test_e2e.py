"""`crawlguard sidecar` as users run it, with real worker processes.

Each test drives a real subprocess sidecar over HTTP on loopback and real
workers (tests/sidecar/worker_child.py) that record the SIGTERM they get.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import WorkerIdentity, register_worker
from tests.helpers import REPO, crawlguard_cmd, wait_until
from tests.sidecar.conftest import Live, Worker, alert, payload

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
SHARD = "slack__eng-oncall"


def rungs(state: dict[str, object]) -> list[dict[str, object]]:
    return [h for h in state["history"] if h["kind"] == "rung"]  # type: ignore[index,attr-defined]


def crawlguard_env(state_dir: Path, shard: str, *args: str) -> str:
    env = {**os.environ, "HELIX_BFM_STATE_DIR": str(state_dir)}
    done = subprocess.run(crawlguard_cmd("env", shard, *args), cwd=REPO, env=env, check=True,
                          capture_output=True, text=True, timeout=60)
    return done.stdout


def test_ladder_restart_then_cpu_and_repeats_do_nothing(
        sidecar_proc: Callable[..., Live], spawn_worker: Callable[..., Worker]) -> None:
    live = sidecar_proc()
    w1 = spawn_worker(SHARD)
    first = payload(alert(SHARD, time.time(), "a1b2c3d4e5f60718"))
    assert live.post_alerts(first)["decisions"][0]["decision"] == "rung"
    wait_until(lambda: w1.terms, what="the first worker's SIGTERM")
    state = live.settled(SHARD)
    assert (state["rung"], state["crawls"], state["env"]) == ("restart", 1, {})
    assert rungs(state)[0]["outcome"] == "signalled"
    assert w1.wait_exit() == 0

    # Alertmanager repeats the notification; an HA peer duplicates it; the
    # replaced worker's BFMShardStalled arrives late. None of it is a new episode.
    stalled = alert(SHARD, time.time() - 1, "0f0f0f0f0f0f0f0f", name="BFMShardStalled")
    for _ in range(5):
        decisions = [d["decision"] for d in live.post_alerts(first)["decisions"]]
        assert decisions == ["duplicate"]
    assert live.post_alerts(payload(stalled))["decisions"][0]["decision"] == "stale"
    state = live.shard(SHARD)
    assert (state["rung"], state["crawls"], len(rungs(state))) == ("restart", 1, 1)
    assert len(w1.terms) == 1

    # The supervisor relaunched the worker; it crawls again: a new episode -> CPU.
    w2 = spawn_worker(SHARD)
    second = payload(alert(SHARD, time.time(), "1111222233334444"))
    assert live.post_alerts(second)["decisions"][0]["decision"] == "rung"
    wait_until(lambda: w2.terms, what="the second worker's SIGTERM")
    # The override was on disk before the worker was signalled.
    assert w2.terms == ['TERM {"BGEM3_DEVICE": "cpu"}']
    state = live.settled(SHARD)
    assert (state["rung"], state["crawls"], state["env"]) == ("cpu", 2,
                                                              {"BGEM3_DEVICE": "cpu"})
    assert [r["rung"] for r in rungs(state)] == ["restart", "cpu"]
    assert crawlguard_env(live.state_dir, SHARD) == "BGEM3_DEVICE=cpu\n"
    assert crawlguard_env(live.state_dir, SHARD, "--format", "sh") == "export BGEM3_DEVICE=cpu\n"
    metrics = live.metrics()
    assert f'crawlguard_sidecar_rung{{shard="{SHARD}"}} 2.0' in metrics
    assert 'crawlguard_sidecar_duplicates_suppressed_total{reason="duplicate"} 5.0' in metrics
    assert live.proc is not None
    live.proc.stop()  # SIGTERM: a clean shutdown
    assert live.proc.popen.returncode == 0, live.proc.output


def test_action_cpu_demotes_at_once_then_is_terminal(
        sidecar_proc: Callable[..., Live], spawn_worker: Callable[..., Worker]) -> None:
    live = sidecar_proc(HELIX_BFM_CRAWL_ACTION="cpu")
    w1 = spawn_worker(SHARD)
    live.post_alerts(payload(alert(SHARD, time.time(), "aaaa")))
    wait_until(lambda: w1.terms, what="SIGTERM")
    assert w1.terms == ['TERM {"BGEM3_DEVICE": "cpu"}']
    state = live.settled(SHARD)
    assert (state["rung"], state["crawls"]) == ("cpu", 1)
    w2 = spawn_worker(SHARD)
    decision = live.post_alerts(payload(alert(SHARD, time.time(), "bbbb")))["decisions"][0]
    assert decision["decision"] == "terminal"
    state = live.shard(SHARD)
    assert (state["rung"], state["crawls"], state["pending"]) == ("cpu", 2, None)
    assert w2.alive() and w2.terms == []


def test_action_off_counts_crawls_and_never_acts(
        sidecar_proc: Callable[..., Live], spawn_worker: Callable[..., Worker]) -> None:
    live = sidecar_proc(HELIX_BFM_CRAWL_ACTION="off")
    w1 = spawn_worker(SHARD)
    now = time.time()
    body = payload(alert(SHARD, now, "aaaa"), alert(SHARD, now, "bbbb", name="BFMShardStalled"))
    assert [d["decision"] for d in live.post_alerts(body)["decisions"]] == [
        "alert_only", "same_episode"]
    r = live.client.post(f"/v1/shards/{SHARD}/rung", json={"rung": "restart", "reason": "x"})
    assert r.status_code == 409 and "off" in r.json()["detail"]
    state = live.shard(SHARD)
    assert (state["rung"], state["crawls"], state["env"], state["pending"]) == (
        "none", 1, {}, None)
    assert w1.alive() and w1.terms == []


def test_sigkill_between_decision_and_signal_neither_repeats_nor_forgets(
        sidecar_proc: Callable[..., Live], spawn_worker: Callable[..., Worker]) -> None:
    crashing = sidecar_proc(HELIX_BFM_TEST_CRASH_AFTER_DECIDE="1")
    w1 = spawn_worker(SHARD)
    first = payload(alert(SHARD, time.time(), "aaaa"))
    with pytest.raises(httpx.TransportError):
        crashing.client.post("/v1/alerts", json=first)
    assert crashing.proc is not None and crashing.proc.wait() == 70
    on_disk = json.loads((crashing.state_dir / "shards" / SHARD / "ladder.json").read_text())
    assert on_disk["pending"]["worker"]["pid"] == w1.proc.pid and on_disk["rung"] == "restart"
    assert w1.alive() and w1.terms == []  # decided, persisted, not yet acted on

    live = sidecar_proc()  # restarted: completes the interrupted rung exactly once
    wait_until(lambda: w1.terms, what="the recovered rung's SIGTERM")
    state = live.settled(SHARD)
    assert (state["rung"], state["crawls"], len(rungs(state))) == ("restart", 1, 1)
    assert rungs(state)[0]["outcome"] == "signalled"
    assert live.post_alerts(first)["decisions"][0]["decision"] == "duplicate"
    assert len(w1.terms) == 1


def test_crash_after_the_worker_was_replaced_signals_nobody_and_remembers(
        sidecar_proc: Callable[..., Live], spawn_worker: Callable[..., Worker]) -> None:
    crashing = sidecar_proc(HELIX_BFM_TEST_CRASH_AFTER_DECIDE="1")
    w1 = spawn_worker(SHARD)
    with pytest.raises(httpx.TransportError):
        crashing.client.post("/v1/alerts", json=payload(alert(SHARD, time.time(), "aaaa")))
    assert crashing.proc is not None and crashing.proc.wait() == 70
    w1.kill()  # it died meanwhile (as if the signal had gone out) ...
    w2 = spawn_worker(SHARD)  # ... and its supervisor relaunched it
    live = sidecar_proc()
    state = live.settled(SHARD)
    assert rungs(state)[0]["outcome"] == "already_gone"
    # Bounded by the successor's start, so the successor's own crawls stay live.
    assert state["last_rung_effective_at"] == pytest.approx(w2.identity.create_time)
    decision = live.post_alerts(payload(alert(SHARD, time.time(), "bbbb")))["decisions"][0]
    assert decision["decision"] == "rung"  # the restart was remembered: this one is CPU
    wait_until(lambda: w2.terms, what="the successor's SIGTERM (for the CPU rung)")
    assert live.settled(SHARD)["rung"] == "cpu"


def test_a_reused_pid_is_never_signalled(
        sidecar_proc: Callable[..., Live], spawn_worker: Callable[..., Worker],
        state_dir: Path) -> None:
    live = sidecar_proc()
    bystander = spawn_worker("other-shard")
    ident = bystander.identity
    # The registration names the bystander's pid with another creation time.
    register_worker(StateDir(state_dir), SHARD, WorkerIdentity(ident.pid, ident.create_time - 60))
    live.post_alerts(payload(alert(SHARD, time.time(), "aaaa")))
    state = live.settled(SHARD)
    assert rungs(state)[0]["outcome"] == "identity_mismatch"
    assert bystander.alive() and bystander.terms == []


def test_no_token_wrong_token_oversized_and_malformed_change_nothing(
        sidecar_proc: Callable[..., Live], spawn_worker: Callable[..., Worker],
        state_dir: Path) -> None:
    live = sidecar_proc()
    w = spawn_worker(SHARD)
    good = payload(alert(SHARD, time.time(), "aaaa"))
    with httpx.Client(base_url=live.url, trust_env=False) as anon:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"},
                        {"Authorization": "Bearer"}):
            r = anon.post("/v1/alerts", json=good, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert anon.post(f"/v1/shards/{SHARD}/rung", json={"rung": "cpu"},
                             headers=headers).status_code == 401
            assert anon.get("/v1/shards", headers=headers).status_code == 401
        assert anon.get("/healthz").status_code == 200
    big = {**good, "pad": "x" * (2 << 20)}
    assert live.client.post("/v1/alerts", json=big).status_code == 413
    for content in (b"{", b"null", b"[]", b'{"version": "4"}', "\u00ff".encode("latin-1")):
        r = live.client.post("/v1/alerts", content=content,
                             headers={"Content-Type": "application/json"})
        assert r.status_code in (400, 422), (content, r.text)  # 400: not even UTF-8
    assert not (state_dir / "shards" / SHARD / "ladder.json").exists()
    assert w.alive() and w.terms == []
