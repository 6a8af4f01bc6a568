"""The sidecar's own /metrics, in a registry per app (never the global one).

A registry per app keeps two sidecars in one test process apart and keeps the
build's multiprocess metrics (the exporter's business) out of this endpoint.

Series (all ``crawlguard_sidecar_*``):

- ``crawlguard_sidecar_alerts_received_total{alertname,status}`` counter: every
  alert of every accepted payload; ``alertname`` is ``other`` for names
  crawlguard does not act on, ``status`` is ``other`` for a malformed alert's.
- ``crawlguard_sidecar_alerts_ignored_total{reason}`` counter: alerts refused
  one by one, the rest of their notification judged, ``reason`` =
  ``malformed_alert`` (it does not validate) | ``unknown_alertname`` |
  ``unsafe_shard`` (a shard label that is no safe name, or differs only in case
  from a shard of the state dir) | ``unsafe_worker`` (a BFMShardOOM without a
  worker identity) | ``unknown_shard`` (no ladder and no registered worker:
  nothing is kept for it, no series either) | ``state_error``.
- ``crawlguard_sidecar_duplicates_suppressed_total{reason}`` counter: alerts
  that took no rung because they belong to an episode already handled,
  ``reason`` = ``duplicate`` | ``same_episode`` | ``stale`` | ``in_progress``.
- ``crawlguard_sidecar_crawls_total{shard}`` counter: new crawl episodes.
- ``crawlguard_sidecar_rungs_total{shard,rung,outcome}`` counter: rungs by
  outcome (``signalled``, ``killed``, ``already_gone``, ``identity_mismatch``,
  ``no_worker``, ``refused``, ``error``: the action itself failed).
- ``crawlguard_sidecar_invalid_requests_total{reason}`` counter: requests
  refused whole, ``reason`` = ``unauthorized`` | ``too_large`` (the body) |
  ``too_many_alerts`` (more than ``webhook.MAX_ALERTS``) | ``malformed`` |
  ``timeout`` (the body did not arrive in time) | ``header_timeout`` (the
  connection closed because its request head did not arrive within
  HELIX_BFM_HEADER_TIMEOUT).
- ``crawlguard_sidecar_rung{shard}`` gauge: highest rung taken, 0 none,
  1 restart, 2 cpu.
- ``crawlguard_sidecar_rung_in_progress{shard}`` gauge: 1 while a rung is
  being carried out.
- ``crawlguard_sidecar_paused`` gauge: 1 while the pause switch is on.
- ``crawlguard_sidecar_request_duration_seconds{route}`` histogram: time from
  a request reaching the app to its answer, ``route`` = ``alerts`` | ``shards``
  | ``other`` (fixed, so a caller cannot create series).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from crawlguard.kernel import rungs

from .ladder import KNOWN_ALERTS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
                   1.0, 2.5, 10.0)


class SidecarMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter("crawlguard_sidecar_alerts_received_total",
                                "Alerts received on the webhook", ["alertname", "status"],
                                registry=r)
        self.ignored = Counter("crawlguard_sidecar_alerts_ignored_total",
                               "Alerts refused one by one", ["reason"], registry=r)
        self.suppressed = Counter("crawlguard_sidecar_duplicates_suppressed_total",
                                  "Alerts of an episode already handled", ["reason"],
                                  registry=r)
        self.crawls = Counter("crawlguard_sidecar_crawls_total", "New crawl episodes",
                              ["shard"], registry=r)
        self.rungs = Counter("crawlguard_sidecar_rungs_total", "Rungs by outcome",
                             ["shard", "rung", "outcome"], registry=r)
        self.invalid = Counter("crawlguard_sidecar_invalid_requests_total",
                               "Requests refused whole", ["reason"], registry=r)
        self.rung = Gauge("crawlguard_sidecar_rung",
                          f"Highest rung taken per shard: {rungs.levels_help()}", ["shard"],
                          registry=r)
        self.in_progress = Gauge("crawlguard_sidecar_rung_in_progress",
                                 "1 while a rung is being carried out", ["shard"], registry=r)
        self.paused = Gauge("crawlguard_sidecar_paused", "1 while the sidecar is paused",
                            registry=r)
        self.duration = Histogram("crawlguard_sidecar_request_duration_seconds",
                                  "Time from a request reaching the app to its answer",
                                  ["route"], registry=r, buckets=LATENCY_BUCKETS)

    def alert_received(self, alertname: str, status: str) -> None:
        # Only known names become label values: the payload must not set cardinality.
        name = alertname if alertname in KNOWN_ALERTS else "other"
        status = status if status in ("firing", "resolved") else "other"
        self.received.labels(alertname=name, status=status).inc()

    def shard_state(self, shard: str, rung: str, in_progress: bool) -> None:
        self.rung.labels(shard=shard).set(rungs.named(rung).level)
        self.in_progress.labels(shard=shard).set(1 if in_progress else 0)

    def observe_request(self, path: str, seconds: float) -> None:
        route = ("alerts" if path == "/v1/alerts" else
                 "shards" if path.startswith("/v1/shards") else "other")
        self.duration.labels(route=route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
