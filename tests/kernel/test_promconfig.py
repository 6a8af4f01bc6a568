"""``kernel.promconfig``'s reading of rules and of Alertmanager's routing tree.

``receivers_of`` is how ``crawlguard doctor`` and the docs tests know where an alert
goes; here it must agree with Alertmanager's own ``amtool config routes test`` on
the shipped route, a fleet's per-rig route and a tree built to exercise
``continue``, inheritance, negative and legacy matchers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from crawlguard import deploy
from crawlguard.kernel import promconfig
from crawlguard.kernel.errors import ConfigError
from crawlguard.rules.files import FLEET_RULES_FILE, RULES_FILE
from crawlguard.rules.payload import ROUTE_KEY
from crawlguard.rules.twin import ACTIONABLE
from crawlguard.sidecar.ladder import KNOWN_ALERTS
from tests.helpers import require_binary

HOOK = {"url": "http://127.0.0.1:9/v1/alerts"}

MADE_UP: dict[str, Any] = {
    "route": {"receiver": "root", "routes": [
        {"receiver": "a", "matchers": ['severity="critical"', 'team!="db"'], "continue": True},
        {"matchers": ['{alertname=~"BFM.*", shard!~"x|y"}'], "routes": [
            {"receiver": "c", "match": {"stage": "backfill"}},
            {"receiver": "d", "match_re": {"device": "cuda:.*"}},
        ]},
        {"receiver": "e", "matchers": ["instance =~ \".+:9847\""]},
    ]},
    "receivers": [{"name": n, "webhook_configs": [HOOK]} for n in ["root", "a", "c", "d", "e"]],
}

LABELS = [
    {"alertname": "BFMShardCrawl", "severity": "critical", "shard": "s", "stage": "backfill"},
    {"alertname": "BFMShardCrawl", "severity": "critical", "shard": "x", "stage": "backfill"},
    {"alertname": "BFMShardCrawl", "severity": "critical", "team": "db", "device": "cuda:0"},
    {"alertname": "BFMShardOOM", "severity": "critical", "shard": "s"},
    {"alertname": "BFMShardOOM", "severity": "info", "shard": "y", "instance": "h:9847"},
    {"alertname": "BFMShardCrawlOnCPU", "severity": "info", "shard": "s", "device": "cpu"},
    {"alertname": "BFMMetricsAbsent", "severity": "warning", "instance": "h:9847"},
    {"alertname": "BFMRigDown", "severity": "warning", "rig": "rig1"},
    {"alertname": "BFMShardStalled", "severity": "critical", "shard": "s", "rig": "rig2"},
    {"alertname": "BFMShardStalled", "severity": "critical", "shard": "s", "rig": "rig9"},
    {"alertname": "NodeDown", "severity": "critical"},
]


def fleet_config() -> dict[str, Any]:
    rigs = [promconfig.RigReceiver(f"sidecar-{n}", f'rig="{n}"', HOOK["url"], {})
            for n in ("rig1", "rig2")]
    return promconfig.per_rig_alertmanager(deploy.ALERTMANAGER, rigs, extra_routes=[
        {"receiver": promconfig.HUMANS_RECEIVER, "matchers": ['alertname="BFMRigDown"']}])


CONFIGS = {"shipped": lambda: promconfig.load_yaml(deploy.ALERTMANAGER), "fleet": fleet_config,
           "made-up": lambda: MADE_UP}


@pytest.mark.binaries
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_receivers_agree_with_amtool(name: str, tmp_path: Path) -> None:
    amtool = require_binary("amtool")
    config = CONFIGS[name]()
    path = tmp_path / "am.yml"
    path.write_text(yaml.safe_dump(config))
    for labels in LABELS:
        done = subprocess.run([amtool, "config", "routes", "test", f"--config.file={path}",
                               *(f"{k}={v}" for k, v in labels.items())],
                              capture_output=True, text=True, timeout=60, check=True)
        theirs = done.stdout.strip().split(",")
        assert promconfig.receivers_of(config, labels) == theirs, labels


def test_alerts_are_read_from_the_rules_files() -> None:
    rules = promconfig.alert_rules(promconfig.rule_groups([RULES_FILE, FLEET_RULES_FILE]))
    by_name = {a.name: a for a in rules}
    assert by_name["BFMShardOOM"].group == "crawlguard-oom"
    assert by_name["BFMRigDown"].labels == {"severity": "warning"}
    names = promconfig.rule_names(promconfig.rule_groups([RULES_FILE]))
    assert names["shard_stage_device_gpu_pid:bfm_spill_evidence:any"] == "crawlguard"
    assert "BFMRigDown" not in names


def test_the_sidecars_alerts_are_the_ones_the_shipped_route_sends_it() -> None:
    """The hand-written lists of the sidecar (which alerts it acts on), the embedded
    evaluator (which it delivers) and its group key all say what the shipped route
    does; an alert routed to the sidecar and missing from them fails here."""
    routed = promconfig.alert_receivers([RULES_FILE], promconfig.load_yaml(deploy.ALERTMANAGER))
    to_sidecar = {n for n, rs in routed.items() if promconfig.SIDECAR_RECEIVER in rs}
    assert to_sidecar == set(KNOWN_ALERTS) == set(ACTIONABLE)
    assert all(rs != ["blackhole"] for rs in routed.values()), routed  # every alert routed
    sidecar = promconfig.shipped_route(promconfig.load_yaml(deploy.ALERTMANAGER),
                                       promconfig.SIDECAR_RECEIVER)
    assert '{}/{alertname=~"' + sidecar.alertnames + '"}' == ROUTE_KEY


@pytest.mark.parametrize("matcher", ['alertname=~"("', "=x", 'alertname~"x"'])
def test_a_route_that_cannot_be_read_is_a_config_error(matcher: str) -> None:
    config = {"route": {"receiver": "r", "routes": [{"receiver": "s", "matchers": [matcher]}]}}
    with pytest.raises(ConfigError):
        promconfig.receivers_of(config, {"alertname": "x"})


def test_a_config_without_a_route_routes_nothing() -> None:
    assert promconfig.receivers_of({}, {"alertname": "x"}) == []


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(
                        ["route", "routes", "receiver", "matchers", "match", "match_re",
                         "continue", "x"]), inner, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(config=st.dictionaries(st.just("route"), JSON))
def test_any_document_is_routed_or_refused_with_a_config_error(config: dict[str, Any]) -> None:
    """What a live Alertmanager answers is read as it comes: a clear error, never a crash."""
    try:
        got = promconfig.receivers_of(config, {"alertname": "BFMShardOOM", "severity": "x"})
    except ConfigError:
        return
    assert all(isinstance(r, str) for r in got)
