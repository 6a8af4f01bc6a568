"""CI checks of everything shipped under rules/ and deploy/.

With the binaries: promtool check rules / test rules / check config and
amtool check-config, plus amtool's routing tree against the alert names.
Without them: the shipped suite is in sync with the scenario table, the
Python twin of the rules (rules/twin.py) carries the same
names, labels, annotations and ``for`` as the YAML, and the rules name only
metrics the exporter serves.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from crawlguard.exporter import catalog
from crawlguard.rules import RULES
from crawlguard.rules.loop import EXPORTER_JOB
from crawlguard.rules.twin import EVIDENCE_RECORD, RATIO_RECORD, SHARED_RECORD, VRAM_RECORD
from tests.helpers import REPO, require_binary

from .gen_promtool_suite import shipped_suite_text
from .harness import SHIPPED_SUITE

RULES_DIR = REPO / "rules"
PROM_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
AM_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
SUITES = sorted((RULES_DIR / "tests").glob("*.yml"))
RUNBOOK_ANCHORS = {"bfmshardcrawl", "bfmshardstalled", "bfmshardcrawloncpu", "bfmmetricsabsent",
                   "bfmshardoom", "bfmmetricsfilecorrupt"}


def _run(argv: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd,
                          check=False)


def _rules() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            out.extend(group["rules"])
    return out


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    for num, unit in re.findall(r"(\d+)(ms|s|m|h|d)", duration):
        total += int(num) * units[unit]
    return total


# -- with the binaries ------------------------------------------------------------
@pytest.mark.binaries
def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    assert RULE_FILES
    proc = _run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.binaries
@pytest.mark.parametrize("suite", SUITES, ids=lambda p: p.name)
def test_promtool_test_rules(suite: Path) -> None:
    promtool = require_binary("promtool")
    proc = _run([promtool, "test", "rules", suite.name], cwd=suite.parent)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


@pytest.mark.binaries
def test_promtool_check_config() -> None:
    promtool = require_binary("promtool")
    proc = _run([promtool, "check", "config", str(PROM_CONFIG)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The config's relative rule_files must resolve to the shipped rules.
    assert "1 rule files found" in proc.stdout + proc.stderr


@pytest.mark.binaries
def test_amtool_check_config() -> None:
    amtool = require_binary("amtool")
    proc = _run([amtool, "check-config", str(AM_CONFIG)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.binaries
@pytest.mark.parametrize(("labels", "receiver"), [
    (["alertname=BFMShardCrawl", "shard=confluence"], "crawlguard-sidecar"),
    (["alertname=BFMShardStalled", "shard=confluence"], "crawlguard-sidecar"),
    (["alertname=BFMShardOOM", "shard=confluence"], "crawlguard-sidecar"),
    (["alertname=BFMShardCrawlOnCPU", "shard=jira"], "crawlguard-humans"),
    (["alertname=BFMMetricsAbsent", "instance=127.0.0.1:9847"], "crawlguard-humans"),
    (["alertname=BFMMetricsFileCorrupt", "instance=127.0.0.1:9847"], "crawlguard-humans"),
    (["alertname=NodeDown", "shard=confluence"], "blackhole"),
])
def test_alertmanager_routes(labels: list[str], receiver: str) -> None:
    amtool = require_binary("amtool")
    proc = _run([amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}",
                 f"--verify.receivers={receiver}", *labels])
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- without binaries ---------------------------------------------------------------
def test_shipped_suite_is_generated_from_the_table() -> None:
    assert SHIPPED_SUITE.read_text(encoding="utf-8") == shipped_suite_text(), (
        "rules/tests/crawlguard_test.yml is stale: run "
        "`python -m tests.rules.gen_promtool_suite`")


def test_python_twin_matches_the_yaml_rules() -> None:
    alerts = {r["alert"]: r for r in _rules() if "alert" in r}
    assert set(alerts) == {r.name for r in RULES}
    for rule in RULES:
        y = alerts[rule.name]
        assert dict(rule.labels) == y.get("labels", {}), rule.name
        assert dict(rule.annotations) == y["annotations"], rule.name
        assert rule.for_s == _seconds(y.get("for", "0s")), rule.name
    records = {r["record"] for r in _rules() if "record" in r}
    assert records == {RATIO_RECORD, VRAM_RECORD, SHARED_RECORD, EVIDENCE_RECORD}


def test_every_alert_has_severity_summary_description_runbook() -> None:
    anchors = set()
    for r in _rules():
        if "alert" not in r:
            continue
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert {"summary", "description", "runbook_url"} <= set(r["annotations"]), r["alert"]
        url = r["annotations"]["runbook_url"]
        assert url.split("#")[0] == "http://127.0.0.1:9848/runbook", url
        anchors.add(url.split("#")[1])
    assert anchors == RUNBOOK_ANCHORS


def test_runbook_has_the_anchors_the_rules_link() -> None:
    runbook = REPO / "sidecar" / "runbook.md"
    # GitHub's anchor of a heading: lower case, punctuation dropped, spaces -> '-'.
    slugs = {re.sub(r"[^a-z0-9 _-]", "", m.group(1).strip().lower()).replace(" ", "-")
             for m in re.finditer(r"^#+\s+(.+)$", runbook.read_text(encoding="utf-8"), re.M)}
    assert slugs >= RUNBOOK_ANCHORS, RUNBOOK_ANCHORS - slugs


def test_rules_name_only_metrics_the_exporter_serves() -> None:
    served = catalog.all_metric_names()
    recorded = {r["record"] for r in _rules() if "record" in r}
    for r in _rules():
        names = set(re.findall(r"\b(bfm_[a-z_]+|[a-z_]+:[a-z_]+:[a-z_]+)\b", r["expr"]))
        unknown = names - served - recorded
        assert not unknown, (r.get("alert") or r.get("record"), unknown)


def test_prometheus_config_scrapes_exporter_and_sidecar() -> None:
    cfg = yaml.safe_load(PROM_CONFIG.read_text(encoding="utf-8"))
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs[EXPORTER_JOB]["static_configs"][0]["targets"] == ["127.0.0.1:9847"]
    sidecar = jobs["crawlguard-sidecar"]
    assert sidecar["static_configs"][0]["targets"] == ["127.0.0.1:9848"]
    assert sidecar.get("metrics_path", "/metrics") == "/metrics"
    assert _seconds(cfg["global"]["evaluation_interval"]) <= 15
    resolved = [(PROM_CONFIG.parent / f).resolve() for f in cfg["rule_files"]]
    assert resolved == [p.resolve() for p in RULE_FILES]


def _with_windows_exporter_job(directory: Path) -> Path:
    """prometheus.yml with its commented windows_exporter job uncommented."""
    lines, inside = [], False
    for line in PROM_CONFIG.read_text(encoding="utf-8").splitlines():
        if line.strip() in ("# BEGIN windows_exporter", "# END windows_exporter"):
            inside = line.strip().startswith("# BEGIN")
            continue
        lines.append(line.replace("  # ", "  ", 1) if inside else line)
    config = directory / "prometheus.yml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def test_windows_exporter_job_is_valid_once_uncommented(tmp_path: Path) -> None:
    prom_dir = tmp_path / "deploy" / "prometheus"
    prom_dir.mkdir(parents=True)
    config = _with_windows_exporter_job(prom_dir)
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    win = jobs["windows-exporter"]
    assert win["static_configs"][0]["targets"] == ["127.0.0.1:9182"]
    # Same host as the exporter: the rules join on the host part of `instance`.
    assert jobs[EXPORTER_JOB]["static_configs"][0]["targets"][0].split(":")[0] == "127.0.0.1"
    (keep,) = win["metric_relabel_configs"]
    assert "windows_gpu_process_memory_shared_bytes" in keep["regex"].split("|")
    promtool = shutil.which("promtool")
    if promtool:  # the binaries-marked tests check the shipped file itself
        cfg["rule_files"] = [str(p) for p in RULE_FILES]
        config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        proc = _run([promtool, "check", "config", str(config)])
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alertmanager_sends_crawl_alerts_to_the_sidecar() -> None:
    cfg = yaml.safe_load(AM_CONFIG.read_text(encoding="utf-8"))
    route = next(r for r in cfg["route"]["routes"] if r["receiver"] == "crawlguard-sidecar")
    # One worker's crawl = one notification: Crawl and Stalled of it share a group,
    # and a relaunched worker (new pid) is a new group, notified after group_wait.
    assert route["group_by"] == ["shard", "pid"]
    assert _seconds(route["group_wait"]) <= 30
    assert _seconds(route["group_interval"]) <= _seconds(route["repeat_interval"])
    receiver = next(r for r in cfg["receivers"] if r["name"] == "crawlguard-sidecar")
    (hook,) = receiver["webhook_configs"]
    assert hook["url"] == "http://127.0.0.1:9848/v1/alerts"
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"]["credentials_file"]


def test_embedded_repeat_interval_matches_the_shipped_sidecar_route() -> None:
    """Both alert paths retry an acknowledged-but-lost notification equally soon."""
    from crawlguard.rules.dispatch import REPEAT_INTERVAL_S

    config = yaml.safe_load((REPO / "deploy/alertmanager/alertmanager.yml").read_text())
    route = next(r for r in config["route"]["routes"] if r["receiver"] == "crawlguard-sidecar")
    assert _seconds(route["repeat_interval"]) == REPEAT_INTERVAL_S


def test_embedded_grouping_matches_the_shipped_sidecar_route() -> None:
    """Both alert paths group alike, so both send a relaunched worker's crawl at once."""
    from crawlguard.rules.dispatch import GROUP_BY

    config = yaml.safe_load((REPO / "deploy/alertmanager/alertmanager.yml").read_text())
    route = next(r for r in config["route"]["routes"] if r["receiver"] == "crawlguard-sidecar")
    assert tuple(route["group_by"]) == GROUP_BY
