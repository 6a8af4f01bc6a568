"""EmbeddedAlerting end to end over an in-memory HTTP transport, with a fake clock."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from crawlguard.kernel.errors import ConfigError, CrawlguardError
from crawlguard.rules import EmbeddedAlerting

ALERTING_LOG = "crawlguard.exporter.alerting"


def worker_text(shard: str, *, ema: float, streak: float = 8, device: str = "cuda:0",
                gpu: str = "0", inflight: float = 0, started: float = 0,
                pid: int = 4242) -> str:
    lab = f'shard="{shard}",stage="backfill",device="{device}",gpu="{gpu}"'
    values = {"bfm_genes_per_second_ema": ema, "bfm_genes_per_second_baseline": 15.3,
              "bfm_crawl_streak_batches": streak, "bfm_crawl_factor": 5,
              "bfm_crawl_window_batches": 8, "bfm_batch_inflight_genes": inflight,
              "bfm_batch_started_timestamp_seconds": started}
    lines = [f"# TYPE {n} gauge\n{n}{{{lab}}} {v}" for n, v in values.items()]
    lines.append(f"# TYPE bfm_batches counter\nbfm_batches_total{{{lab}}} 12")
    lines.append(f'# TYPE bfm_worker_info gauge\nbfm_worker_info{{{lab},pid="{pid}"}} 1')
    return "\n".join(lines) + "\n"


def vram_text(gpu: str = "0", used: float = 11.85e9) -> str:
    return (f'# TYPE bfm_vram_used_bytes gauge\nbfm_vram_used_bytes{{gpu="{gpu}"}} {used}\n'
            f'# TYPE bfm_vram_total_bytes gauge\nbfm_vram_total_bytes{{gpu="{gpu}"}} 12e9\n'
            f'# TYPE bfm_vram_full_ratio gauge\nbfm_vram_full_ratio{{gpu="{gpu}"}} 0.95\n')


@dataclass
class Rig:
    """The fake exporter and sidecar behind one MockTransport."""

    metrics: str = ""
    exporter_up: bool = True
    sidecar_status: int = 200
    sidecar_down: bool = False
    posts: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    attempts: int = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metrics":
            if not self.exporter_up:
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(200, text=self.metrics)
        assert request.url.path == "/v1/alerts"
        self.attempts += 1
        if self.sidecar_down:
            raise httpx.ConnectError("refused", request=request)
        if self.sidecar_status == 200:
            self.posts.append(json.loads(request.content))
            self.auth.append(request.headers.get("authorization"))
        return httpx.Response(self.sidecar_status, json={})


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(rig: Rig, clock: Clock, **kw: Any) -> EmbeddedAlerting:
    return EmbeddedAlerting("http://127.0.0.1:9847", "http://127.0.0.1:9848", "s3cret",
                            interval_s=5.0, clock=clock,
                            transport=httpx.MockTransport(rig.handle), **kw)


def alertnames(post: dict[str, Any]) -> list[str]:
    return [a["labels"]["alertname"] for a in post["alerts"]]


def test_one_notification_per_episode_with_bearer_and_worker_labels() -> None:
    rig, clock = Rig(worker_text("confluence", ema=2.3) + vram_text()), Clock()
    with make(rig, clock) as alerting:
        report = alerting.run_once()
        assert report.scrape_ok and [a.name for a in report.firing] == ["BFMShardCrawl"]
        for _ in range(10):
            clock.t += 5
            alerting.run_once()
    assert len(rig.posts) == 1 and rig.auth == ["Bearer s3cret"]
    (post,) = rig.posts
    assert post["version"] == "4" and post["status"] == "firing"
    assert post["receiver"] == "crawlguard-sidecar"
    assert post["groupLabels"] == {"shard": "confluence", "pid": "4242"}
    (alert,) = post["alerts"]
    assert alert["labels"] == {
        "alertname": "BFMShardCrawl", "severity": "critical", "shard": "confluence",
        "stage": "backfill", "device": "cuda:0", "gpu": "0", "pid": "4242",
        "job": "crawlguard-exporter", "instance": "127.0.0.1:9847"}
    assert alert["startsAt"] == "2023-11-14T22:13:20Z"
    assert alert["generatorURL"] == "http://127.0.0.1:9847/metrics"


def test_repeat_interval_resends_unchanged_firing_group() -> None:
    rig, clock = Rig(worker_text("confluence", ema=2.3) + vram_text()), Clock()
    with make(rig, clock, repeat_interval_s=60.0) as alerting:
        alerting.run_once()
        clock.t += 55
        alerting.run_once()
        assert len(rig.posts) == 1
        clock.t += 5
        alerting.run_once()
    assert len(rig.posts) == 2
    assert rig.posts[0]["alerts"] == rig.posts[1]["alerts"]  # same episode, same startsAt


def test_crawl_and_stall_of_a_shard_are_one_group_other_shards_separate() -> None:
    clock = Clock()
    text = (worker_text("confluence", ema=2.3, inflight=64, started=clock.t - 1000)
            + worker_text("jira", ema=2.3, device="cuda:1", gpu="1") + vram_text("0")
            + vram_text("1"))
    rig = Rig(text)
    with make(rig, clock) as alerting:
        alerting.run_once()
    by_shard = {p["groupLabels"]["shard"]: p for p in rig.posts}
    assert set(by_shard) == {"confluence", "jira"}
    assert alertnames(by_shard["confluence"]) == ["BFMShardCrawl", "BFMShardStalled"]
    assert by_shard["confluence"]["commonLabels"]["shard"] == "confluence"
    assert alertnames(by_shard["jira"]) == ["BFMShardCrawl"]


def test_failed_delivery_is_retried_with_bounded_backoff() -> None:
    rig, clock = Rig(worker_text("confluence", ema=2.3) + vram_text(), sidecar_status=503), Clock()
    with make(rig, clock, retry_initial_s=2.0, retry_max_s=8.0) as alerting:
        assert len(alerting.run_once().failed) == 1           # try 1, next in 2 s
        clock.t += 1
        alerting.run_once()
        assert rig.attempts == 1                               # still backing off
        delays = []
        for _ in range(5):
            before = rig.attempts
            start = clock.t
            while rig.attempts == before:
                clock.t += 1
                alerting.run_once()
            delays.append(clock.t - start)
        assert delays[-1] <= 8 and max(delays) == 8            # doubled, then capped
        rig.sidecar_status = 200
        while not rig.posts:
            clock.t += 1
            alerting.run_once()
        clock.t += 1
        assert not alerting.run_once().delivered               # delivered once, then quiet
    assert len(rig.posts) == 1


def test_unreachable_sidecar_and_bad_token_are_retried(caplog: pytest.LogCaptureFixture) -> None:
    rig, clock = Rig(worker_text("confluence", ema=2.3) + vram_text(), sidecar_down=True), Clock()
    with make(rig, clock, retry_max_s=30.0) as alerting:
        assert alerting.run_once().failed
        rig.sidecar_down, rig.sidecar_status = False, 401
        clock.t += 1
        with caplog.at_level(logging.WARNING, ALERTING_LOG):
            alerting.run_once()
        assert "HELIX_BFM_SIDECAR_TOKEN" in caplog.text
        rig.sidecar_status = 200
        clock.t += 29
        alerting.run_once()
        assert not rig.posts                                   # 401 backs off the maximum
        clock.t += 1
        alerting.run_once()
    assert len(rig.posts) == 1


def test_resolution_is_sent_once_and_a_new_episode_at_once() -> None:
    rig, clock = Rig(worker_text("confluence", ema=2.3) + vram_text()), Clock()
    with make(rig, clock) as alerting:
        alerting.run_once()
        rig.metrics = worker_text("confluence", ema=15.0, streak=0) + vram_text()
        for _ in range(3):
            clock.t += 5
            alerting.run_once()
        assert [p["status"] for p in rig.posts] == ["firing", "resolved"]
        resolved = rig.posts[1]["alerts"][0]
        assert resolved["endsAt"] == "2023-11-14T22:13:25Z"
        rig.metrics = worker_text("confluence", ema=2.3) + vram_text()
        clock.t += 5
        alerting.run_once()
    assert [p["status"] for p in rig.posts] == ["firing", "resolved", "firing"]
    first, new = rig.posts[0]["alerts"][0], rig.posts[2]["alerts"][0]
    assert first["fingerprint"] == new["fingerprint"]
    assert new["startsAt"] > first["startsAt"]


def test_relaunched_workers_crawl_is_a_new_group_sent_at_once() -> None:
    """The worker's pid is in the labels and the grouping: a relaunched worker's crawl
    is a new alert in a new group, sent at the next tick, not at a repeat."""
    rig, clock = Rig(worker_text("confluence", ema=2.3) + vram_text()), Clock()
    with make(rig, clock) as alerting:
        alerting.run_once()
        rig.metrics = worker_text("confluence", ema=2.3, pid=5151) + vram_text()
        clock.t += 5
        alerting.run_once()
    firing = [p for p in rig.posts if p["status"] == "firing"]
    assert [p["groupLabels"] for p in firing] == [{"pid": "4242", "shard": "confluence"},
                                                  {"pid": "5151", "shard": "confluence"}]
    assert firing[0]["alerts"][0]["fingerprint"] != firing[1]["alerts"][0]["fingerprint"]
    assert [p["groupLabels"]["pid"] for p in rig.posts if p["status"] == "resolved"] == ["4242"]


def test_exporter_down_resolves_and_only_logs_metrics_absent(
        caplog: pytest.LogCaptureFixture) -> None:
    rig, clock = Rig(worker_text("confluence", ema=2.3) + vram_text()), Clock()
    with make(rig, clock) as alerting, caplog.at_level(logging.INFO, ALERTING_LOG):
        alerting.run_once()
        rig.exporter_up = False
        clock.t += 5
        report = alerting.run_once()
        assert not report.scrape_ok
        for _ in range(30):
            clock.t += 5
            report = alerting.run_once()
        assert [a.name for a in report.firing] == ["BFMMetricsAbsent"]
    assert [p["status"] for p in rig.posts] == ["firing", "resolved"]
    assert "scrape of http://127.0.0.1:9847/metrics failed" in caplog.text
    assert "BFMMetricsAbsent firing" in caplog.text


def test_cpu_crawl_is_logged_not_delivered(caplog: pytest.LogCaptureFixture) -> None:
    rig, clock = Rig(worker_text("jira", ema=0.1, device="cpu", gpu="") + vram_text()), Clock()
    with make(rig, clock) as alerting, caplog.at_level(logging.WARNING, ALERTING_LOG):
        assert [a.name for a in alerting.run_once().firing] == ["BFMShardCrawlOnCPU"]
    assert not rig.posts
    assert "BFMShardCrawlOnCPU firing: Shard jira (backfill) still crawls on CPU" in caplog.text


def test_run_forever_ticks_until_stopped() -> None:
    rig = Rig(worker_text("confluence", ema=2.3) + vram_text())
    alerting = EmbeddedAlerting("http://127.0.0.1:9847/metrics",
                                "http://127.0.0.1:9848/v1/alerts", None, interval_s=0.01,
                                transport=httpx.MockTransport(rig.handle))
    stop = threading.Event()
    thread = threading.Thread(target=alerting.run_forever, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 10
    while not rig.posts and time.monotonic() < deadline:
        stop.wait(0.01)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert len(rig.posts) == 1 and rig.auth == [None]


@pytest.mark.parametrize(("args", "knob"), [
    (("ftp://x", "http://127.0.0.1:9848", None), "exporter_url"),
    (("http://127.0.0.1:9847", "127.0.0.1:9848", None), "sidecar_url"),
    (("http://127.0.0.1:9847", "http://127.0.0.1:9848", None, 0.0), "interval_s"),
])
def test_bad_configuration_is_a_config_error(args: tuple[Any, ...], knob: str) -> None:
    with pytest.raises(ConfigError) as err:
        EmbeddedAlerting(*args)
    assert isinstance(err.value, CrawlguardError) and err.value.knob == knob
