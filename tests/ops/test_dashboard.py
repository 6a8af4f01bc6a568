"""The Grafana dashboard and its provisioning: parse, valid PromQL, only real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from crawlguard.exporter.catalog import all_metric_names
from crawlguard.sidecar.metrics import SidecarMetrics
from crawlguard.sidecar.verify import VERIFICATION_METRICS
from tests.helpers import REPO, require_binary

from .promql import (
    DASHBOARD,
    metric_names,
    promtool_check,
    queries,
    recorded_names,
    substitute,
    walk_panels,
)

GRAFANA = REPO / "deploy" / "grafana"
UID = "crawlguard-rebuild"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def sidecar_metric_names() -> set[str]:
    names = set()
    for family in SidecarMetrics().registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def test_dashboard_identity_and_variables(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == UID
    assert "id" not in dashboard or dashboard["id"] is None  # Grafana assigns it
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["shard"]["type"] == "query" and variables["shard"]["multi"]
    assert "shard" in variables["shard"]["definition"]
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in walk_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_every_query_is_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    exprs = [substitute(e) for _, e in queries(dashboard)]
    for e in exprs:
        assert "$" not in e, f"unsubstituted variable in {e}"
    promtool_check(exprs, tmp_path, promtool)


def test_every_metric_exists(dashboard: dict[str, Any]) -> None:
    known = (all_metric_names() | sidecar_metric_names() | recorded_names(REPO / "rules")
             | {"ALERTS"} | set(VERIFICATION_METRICS))
    missing = {}
    for where, expr in queries(dashboard):
        unknown = metric_names(substitute(expr)) - known
        if unknown:
            missing[where] = sorted(unknown)
    assert not missing, f"metrics that nothing serves or records: {missing}"


def test_dashboard_draws_what_operators_need(dashboard: dict[str, Any]) -> None:
    exprs = "\n".join(e for _, e in queries(dashboard))
    needles = [
        "bfm_genes_per_second{", "bfm_genes_per_second_ema{", "bfm_genes_per_second_baseline{",
        "bfm_genes_per_second_baseline{instance=~\"$instance\", shard=~\"$shard\"} / "
        "bfm_crawl_factor",                                          # the crawl threshold
        "shard_stage_device_gpu:bfm_genes_per_second_ema_per_baseline:ratio",
        "bfm_vram_used_bytes", "bfm_vram_total_bytes", "* bfm_vram_full_ratio",
        "bfm_crawl_streak_batches", "bfm_crawl_window_batches",
        "time() - bfm_batch_started_timestamp_seconds", "bfm_batch_inflight_genes",
        "bfm_genes_remaining",                                         # progress and ETA
        "crawlguard_sidecar_rung{", "ALERTS{", "crawlguard_sidecar_rungs_total",
        "bfm_worker_shared_memory_bytes{", "crawlguard_sidecar_restart_verified{",
        "crawlguard_sidecar_restart_verified_rate_ratio{",
        # spill evidence: each source against its threshold, and the figures
        "/ bfm_vram_full_ratio", "shard_stage_device_gpu_pid:bfm_shared_memory_bytes:sum{",
        "group_left bfm_shared_min_bytes", "bfm_worker_vram_reserved_bytes{",
        "group_left bfm_vram_total_bytes", "shard_stage_device_gpu_pid:bfm_spill_evidence:any{",
    ]
    for needle in needles:
        assert needle in exprs, f"the dashboard has no query with {needle!r}"
    names = {a["name"] for a in dashboard["annotations"]["list"]}
    assert {"crawlguard alerts", "rungs"} <= names


def test_grafana_variables_of_queries_are_defined(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    builtin = {"__rate_interval", "__interval", "__range", "__range_s"}
    for where, expr in queries(dashboard):
        used = set(re.findall(r"\$\{?(\w+)", expr))
        assert used <= defined | builtin, f"{where}: undefined {used - defined - builtin}"


def test_provisioning_points_at_the_dashboard(dashboard: dict[str, Any]) -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/crawlguard.yml").read_text())
    assert provider["apiVersion"] == 1
    (p,) = provider["providers"]
    assert p["type"] == "file" and Path(p["options"]["path"]).is_absolute()
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (ds,) = sources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"].startswith("http")
    default = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert default["current"]["value"] == ds["uid"]
    # Every panel and annotation goes through the datasource variable.
    for p in walk_panels(dashboard["panels"]):
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
