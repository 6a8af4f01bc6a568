"""Unit tests of rules: templating, samples, evaluator state, payload."""

from __future__ import annotations

import math

import pytest

from crawlguard.rules import Evaluator, Sample, Snapshot, build_payload, fingerprint
from crawlguard.rules.evaluator import FIRING, INACTIVE, PENDING
from crawlguard.rules.payload import GO_ZERO_TIME, group_key, label_string, rfc3339
from crawlguard.rules.samples import label_set, parse_exposition
from crawlguard.rules.templating import (
    TemplateError,
    humanize,
    humanize_duration,
    humanize_percentage,
    render,
)
from crawlguard.rules.twin import prom_div

# -- templating (values from Prometheus' own template tests and docs) ---------------


@pytest.mark.parametrize(("value", "text"), [
    (0.0, "0"), (1234567.0, "1.235M"), (0.0123, "12.3m"), (15.0, "15"), (1e-12, "1p"),
    (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"), (-1500.0, "-1.5k"),
])
def test_humanize(value: float, text: str) -> None:
    assert humanize(value) == text


@pytest.mark.parametrize(("value", "text"), [
    (899.99, "14m 59s"), (0.0, "0s"), (1.0, "1s"), (1.5, "1.5s"), (86400 * 2 + 61, "2d 0h 1m 1s"),
    (3600.0, "1h 0m 0s"), (0.1, "100ms"), (-90.0, "-1m 30s"), (math.nan, "NaN"),
])
def test_humanize_duration(value: float, text: str) -> None:
    assert humanize_duration(value) == text


def test_humanize_percentage() -> None:
    assert humanize_percentage(0.1234567) == "12.35%"
    assert humanize_percentage(2.3 / 15.3) == "15.03%"


def test_render_labels_value_and_missing_label() -> None:
    out = render("{{ $labels.shard }} gpu={{ $labels.gpu }} at {{ $value | humanizePercentage }}"
                 " {{humanize $value}}", {"shard": "confluence"}, 0.5)
    assert out == "confluence gpu= at 50% 500m"


@pytest.mark.parametrize("bad", ["{{ $value }}", "{{ .Labels.x }}", "{{ if 1 }}x{{ end }}",
                                 "{{- $labels.x -}}", "{{ $value | title }}"])
def test_render_refuses_what_it_does_not_mirror(bad: str) -> None:
    with pytest.raises(TemplateError):
        render(bad, {}, 1.0)


# -- samples ---------------------------------------------------------------------------
def test_label_set_drops_empty_values_like_prometheus() -> None:
    assert label_set({"shard": "s", "gpu": "", "__name__": "x"}) == (("shard", "s"),)


def test_fingerprint_is_fnv1a_of_sorted_labels() -> None:
    # Alertmanager's value for the empty set is the FNV-1a offset basis.
    assert fingerprint({}) == "cbf29ce484222325"
    assert fingerprint({"b": "2", "a": "1"}) == fingerprint({"a": "1", "b": "2"})
    assert fingerprint({"a": "1"}) != fingerprint({"a": "2"})
    assert len(fingerprint({"alertname": "BFMShardCrawl"})) == 16


def test_parse_exposition_adds_target_labels() -> None:
    text = ('# TYPE bfm_batches counter\nbfm_batches_total{shard="s",gpu=""} 3.0\n'
            '# TYPE bfm_vram_used_bytes gauge\nbfm_vram_used_bytes{gpu="0"} 1e9\n')
    got = {(s.name, s.labels, s.value)
           for s in parse_exposition(text, {"job": "j", "instance": "h:1"})}
    assert ("bfm_batches_total", (("instance", "h:1"), ("job", "j"), ("shard", "s")),
            3.0) in got
    assert ("bfm_vram_used_bytes", (("gpu", "0"), ("instance", "h:1"), ("job", "j")),
            1e9) in got


def test_prom_div_follows_ieee() -> None:
    assert prom_div(1.0, 0.0) == math.inf
    assert prom_div(-1.0, 0.0) == -math.inf
    assert math.isnan(prom_div(0.0, 0.0))
    assert prom_div(3.0, 2.0) == 1.5


# -- evaluator ---------------------------------------------------------------------------
W = {"shard": "confluence", "stage": "backfill", "device": "cuda:0", "gpu": "0"}
G = {"gpu": "0"}


def crawl_snapshot(ema: float = 2.3, streak: float = 8, used: float = 11.85e9,
                   started: float = 0.0, inflight: float = 0.0) -> Snapshot:
    w, g = label_set(W), label_set(G)
    return Snapshot([
        Sample("bfm_genes_per_second_ema", w, ema),
        Sample("bfm_genes_per_second_baseline", w, 15.3),
        Sample("bfm_crawl_streak_batches", w, streak),
        Sample("bfm_crawl_factor", w, 5.0),
        Sample("bfm_crawl_window_batches", w, 8.0),
        Sample("bfm_batch_started_timestamp_seconds", w, started),
        Sample("bfm_batch_inflight_genes", w, inflight),
        Sample("bfm_batches_total", w, 10.0),
        Sample("bfm_worker_info", label_set({**W, "pid": "4242"}), 1.0),
        Sample("bfm_vram_used_bytes", g, used),
        Sample("bfm_vram_total_bytes", g, 12e9),
        Sample("bfm_vram_full_ratio", g, 0.95),
    ])


def test_crawl_fires_at_once_and_resolves_and_refires_as_new_episode() -> None:
    ev = Evaluator()
    (a,) = ev.evaluate(crawl_snapshot(), 100.0)
    assert (a.name, a.state, a.active_at, a.fired_at, a.starts_at) == (
        "BFMShardCrawl", FIRING, 100.0, 100.0, 100.0)
    assert a.labels == {**W, "pid": "4242", "alertname": "BFMShardCrawl",
                        "severity": "critical"}
    assert "15.03% of its own baseline" in a.annotations["description"]
    (a2,) = ev.evaluate(crawl_snapshot(ema=2.0), 105.0)
    assert (a2.state, a2.starts_at) == (FIRING, 100.0)  # same alert, value refreshed
    assert "13.07%" in a2.annotations["description"]
    (r,) = ev.evaluate(crawl_snapshot(streak=0), 110.0)
    assert (r.state, r.status, r.resolved_at) == (INACTIVE, "resolved", 110.0)
    (n,) = [x for x in ev.evaluate(crawl_snapshot(), 120.0) if x.state == FIRING]
    assert n.starts_at == 120.0 and n.fingerprint == a.fingerprint


def test_resolved_alert_is_kept_fifteen_minutes_then_dropped() -> None:
    ev = Evaluator()
    ev.evaluate(crawl_snapshot(), 0.0)
    ev.evaluate(crawl_snapshot(streak=0), 10.0)
    assert [a.state for a in ev.evaluate(crawl_snapshot(streak=0), 10.0 + 900)] == [INACTIVE]
    assert ev.evaluate(crawl_snapshot(streak=0), 10.0 + 901) == []


def test_for_duration_keeps_metrics_absent_pending() -> None:
    ev = Evaluator()
    ev.evaluate(crawl_snapshot(streak=0), 0.0)
    (p,) = ev.evaluate(Snapshot([]), 60.0)
    assert (p.name, p.state) == ("BFMMetricsAbsent", PENDING)
    (p2,) = ev.evaluate(Snapshot([]), 179.0)
    assert p2.state == PENDING
    (f,) = ev.evaluate(Snapshot([]), 180.0)
    assert (f.state, f.starts_at, f.active_at) == (FIRING, 180.0, 60.0)
    # A pending alert that stops matching is forgotten, not resolved.
    ev2 = Evaluator()
    ev2.evaluate(crawl_snapshot(streak=0), 0.0)
    ev2.evaluate(Snapshot([]), 60.0)
    assert ev2.evaluate(crawl_snapshot(streak=0), 120.0) == []


def test_stall_and_crawl_of_one_worker_share_worker_labels() -> None:
    # 8 x 5 x 64 / 15.3 = 167.3 s
    alerts = Evaluator().evaluate(crawl_snapshot(started=0.0, inflight=64), 168.0)
    assert {a.name for a in alerts} == {"BFMShardCrawl", "BFMShardStalled"}
    stall = next(a for a in alerts if a.name == "BFMShardStalled")
    assert "2m 48s" in stall.annotations["description"]
    assert {k: stall.labels[k] for k in W} == W
    assert not Evaluator().evaluate(crawl_snapshot(streak=0, started=0.0, inflight=64), 167.0)


# -- payload ---------------------------------------------------------------------------
def test_payload_is_alertmanager_v4() -> None:
    ev = Evaluator()
    (a,) = ev.evaluate(crawl_snapshot(), 1700000000.25)
    p = build_payload([a], {"shard": "confluence"}, external_url="http://x/metrics",
                      generator_url="http://x/metrics")
    assert list(p) == ["version", "groupKey", "truncatedAlerts", "status", "receiver",
                       "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
                       "alerts"]
    assert p["version"] == "4" and p["status"] == "firing" and p["truncatedAlerts"] == 0
    assert p["groupKey"] == ('{}/{alertname=~"BFMShardCrawl|BFMShardStalled|BFMShardOOM"}:'
                             '{shard="confluence"}')
    assert p["commonLabels"] == a.labels and p["commonAnnotations"] == a.annotations
    (j,) = p["alerts"]
    assert j == {"status": "firing", "labels": dict(sorted(a.labels.items())),
                 "annotations": dict(sorted(a.annotations.items())),
                 "startsAt": "2023-11-14T22:13:20.25Z", "endsAt": GO_ZERO_TIME,
                 "generatorURL": "http://x/metrics", "fingerprint": a.fingerprint}
    (r,) = ev.evaluate(crawl_snapshot(streak=0), 1700000005.0)
    resolved = build_payload([r], {"shard": "confluence"}, external_url="", generator_url="")
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["endsAt"] == "2023-11-14T22:13:25Z"


def test_common_labels_keep_only_shared_pairs() -> None:
    alerts = Evaluator().evaluate(crawl_snapshot(started=0.0, inflight=64), 200.0)
    p = build_payload(alerts, {"shard": "confluence"}, external_url="", generator_url="")
    assert "alertname" not in p["commonLabels"]
    assert p["commonLabels"]["shard"] == "confluence"
    assert [x["labels"]["alertname"] for x in p["alerts"]] == ["BFMShardCrawl",
                                                               "BFMShardStalled"]


def test_time_and_label_formatting() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1.5) == "1970-01-01T00:00:01.5Z"
    assert label_string({"b": 'x"y', "a": "1"}) == '{a="1", b="x\\"y"}'
    assert group_key({}, "{}") == "{}:{}"
