"""The fleet dashboard: valid PromQL, only real metrics, and what an operator of many rigs needs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from crawlguard import deploy
from crawlguard.exporter.catalog import all_metric_names
from crawlguard.sidecar.verify import VERIFICATION_METRICS
from tests.helpers import REPO, require_binary
from tests.ops.promql import (
    metric_names,
    promtool_check,
    queries,
    recorded_names,
    substitute,
    walk_panels,
)
from tests.ops.test_dashboard import sidecar_metric_names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(deploy.FLEET_DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def test_identity_and_the_rig_variable(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "crawlguard-fleet" and "crawlguard" in dashboard["tags"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    rig = variables["rig"]
    assert rig["type"] == "query" and rig["multi"] and rig["includeAll"]
    assert rig["definition"] == 'label_values(up{job="crawlguard-exporter"}, rig)'
    assert variables["datasource"]["current"]["value"] == "crawlguard-prometheus"
    ids = [p["id"] for p in walk_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))


def test_every_query_is_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    exprs = [substitute(e) for _, e in queries(dashboard)]
    assert all("$" not in e for e in exprs)
    promtool_check(exprs, tmp_path, promtool)


def test_every_metric_exists(dashboard: dict[str, Any]) -> None:
    known = (all_metric_names() | sidecar_metric_names() | recorded_names(REPO / "rules")
             | recorded_names(REPO / "rules" / "fleet") | {"ALERTS", "up"}
             | set(VERIFICATION_METRICS))
    missing = {where: sorted(metric_names(substitute(e)) - known)
               for where, e in queries(dashboard) if metric_names(substitute(e)) - known}
    assert not missing, missing


def test_every_query_is_scoped_to_the_chosen_rigs(dashboard: dict[str, Any]) -> None:
    for where, expr in queries(dashboard):
        if where.startswith("variable rig"):
            continue
        for selector in re.findall(r"[a-zA-Z_:]+\{[^}]*\}", expr):
            assert 'rig=~"$rig"' in selector, f"{where}: {selector} ignores $rig"


def test_the_overview_is_rigs_by_shards(dashboard: dict[str, Any]) -> None:
    """One table, a row per rig and shard: rate vs baseline, rung, ETA, alerts."""
    (table,) = [p for p in walk_panels(dashboard["panels"]) if p["title"] == "Rigs x shards"]
    exprs = " ".join(t["expr"] for t in table["targets"])
    for needle in ("shard_stage_device_gpu:bfm_genes_per_second_ema_per_baseline:ratio",
                   "crawlguard_sidecar_rung", "bfm_genes_remaining", "ALERTS{"):
        assert needle in exprs, needle
    assert all("by (rig, shard)" in t["expr"] for t in table["targets"])
    assert table["transformations"][0]["id"] == "merge"
    # The rig alert: reachability and BFMRigDown on the dashboard.
    everything = " ".join(e for _, e in queries(dashboard))
    assert 'up{job="crawlguard-exporter"' in everything
    assert 'alertname=~"BFM.+"' in everything  # BFMRigDown among them


def test_the_generator_ships_it(dashboard: dict[str, Any]) -> None:
    assert "grafana/dashboards/crawlguard-fleet.json" in (REPO / "pyproject.toml").read_text()
