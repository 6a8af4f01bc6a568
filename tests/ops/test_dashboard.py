"""The Grafana dashboard and its provisioning: parse, valid PromQL, only real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from crawlguard import deploy
from crawlguard.exporter.catalog import all_metric_names
from crawlguard.kernel.promconfig import alert_rules, rule_groups
from crawlguard.rules.files import FLEET_RULES_FILE, RULES_FILE
from crawlguard.sidecar.metrics import SidecarMetrics
from crawlguard.sidecar.verify import VERIFICATION_METRICS
from tests.helpers import REPO, require_binary

from .promql import (
    DASHBOARD,
    alertname_patterns,
    alerts_left_out,
    metric_names,
    promtool_check,
    queries,
    recorded_names,
    repeated_per,
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


# -- every alert, every shard ----------------------------------------------------------

SHOWN = [(deploy.DASHBOARD, [RULES_FILE]), (deploy.FLEET_DASHBOARD, [RULES_FILE, FLEET_RULES_FILE])]
"""Each dashboard and the rules whose alerts it shows: the rig's, and on the fleet's
central Prometheus the fleet's rule too."""


def alert_queries(dash: dict[str, Any]) -> dict[str, list[str]]:
    """The alert panel ("Alerts firing") and the alert annotation -> their ALERTS queries."""
    out = {f"panel {p['title']!r}": [t["expr"] for t in p["targets"]]
           for p in walk_panels(dash["panels"]) if p["title"] == "Alerts firing"}
    out.update({f"annotation {a['name']!r}": [a["expr"]]
                for a in dash["annotations"]["list"] if a["name"] == "crawlguard alerts"})
    return out


@pytest.mark.parametrize(("path", "rules"), SHOWN, ids=["rebuild", "fleet"])
def test_the_alert_panel_and_annotation_show_every_alert_of_the_rules(
        path: Path, rules: list[Path]) -> None:
    """Read from the rules, not listed here: an alert added to the rules and not to the
    dashboard fails this test."""
    dash = json.loads(path.read_text())
    alerts = [a.name for a in alert_rules(rule_groups(rules))]
    assert "BFMShardOOM" in alerts
    found = alert_queries(dash)
    assert len(found) == 2, f"an alert panel and an alert annotation: {sorted(found)}"
    for where, exprs in found.items():
        for expr in exprs:
            patterns = alertname_patterns(expr)
            assert patterns, f"{where}: no alertname=~ matcher in {expr}"
            assert not alerts_left_out(patterns, alerts), (
                f"{where} leaves out {alerts_left_out(patterns, alerts)}: {expr}")


def test_the_check_would_catch_an_alert_added_to_the_rules() -> None:
    dash = json.loads(deploy.DASHBOARD.read_text())
    alerts = [a.name for a in alert_rules(rule_groups([RULES_FILE]))]
    for exprs in alert_queries(dash).values():
        patterns = [p for e in exprs for p in alertname_patterns(e)]
        assert alerts_left_out(patterns, [*alerts, "BFMShardSomethingNew"]) == \
            ["BFMShardSomethingNew"]
    assert alerts_left_out([], ["BFMShardCrawl"]) == ["BFMShardCrawl"]


@pytest.mark.parametrize(("path", "variable"), [(deploy.DASHBOARD, "shard"),
                                                (deploy.FLEET_DASHBOARD, "rig"),
                                                (deploy.FLEET_DASHBOARD, "shard")],
                         ids=["rebuild", "fleet-rig", "fleet-shard"])
def test_a_panel_titled_for_one_shard_is_repeated_per_shard(path: Path, variable: str) -> None:
    """A multi-value variable in a title joins the values ("a + b + c") unless the panel
    (or its row) repeats per value."""
    dash = json.loads(path.read_text())
    titled = repeated_per(dash, variable)
    assert not [t for t, repeated in titled.items() if not repeated], titled
    if path == deploy.DASHBOARD:
        for title in ("Spill evidence on $shard: each source against its threshold",
                      "torch's reservation vs the dedicated total on $shard",
                      "genes/s on $shard: last batch, EMA, baseline, crawl threshold"):
            assert titled.get(title) is True, title


def test_repeated_per_sees_a_panel_that_is_not_repeated() -> None:
    dash = {"panels": [{"type": "row", "title": "R", "panels": []},
                       {"type": "timeseries", "title": "x on $shard"},
                       {"type": "row", "title": "on $shard", "repeat": "shard", "panels": []},
                       {"type": "timeseries", "title": "y on $shard"}]}
    assert repeated_per(dash, "shard") == {"x on $shard": False, "on $shard": True,
                                           "y on $shard": True}
