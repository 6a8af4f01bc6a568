"""BFMShardOOM: the shipped rule (promtool) and the embedded evaluator agree.

The OOM series exists only while the exporter serves a dead worker's OOM
record (exporter/oomseries.py): one series per dead worker, with its pid and
identity. Scenarios: one death; two deaths of the same shard (two alerts);
a series that vanishes (served no longer, the alert resolves).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import require_binary

from .harness import RULES_FILE, run_evaluator, run_promtool, suite_text, verdict
from .scenarios import INSTANCE, JOB, STEP_S, Check, Scenario, selector

OOM = "BFMShardOOM"


def death(pid: int, values: str, shard: str = "docs") -> tuple[str, str]:
    labels = {"shard": shard, "stage": "backfill", "device": "cuda:0", "gpu": "0",
              "pid": str(pid), "worker": f"{pid}-1700000000000", "instance": INSTANCE,
              "job": JOB}
    return selector("bfm_worker_oom_timestamp_seconds", labels), values


def expected(pid: int, shard: str = "docs") -> dict[str, str]:
    return {"alertname": OOM, "severity": "critical", "shard": shard, "stage": "backfill",
            "device": "cuda:0", "gpu": "0", "pid": str(pid),
            "worker": f"{pid}-1700000000000", "instance": INSTANCE, "job": JOB}


SCENARIOS = [
    Scenario("one_death", "a worker died of OOM at minute 2 and is served for 15 minutes",
             [death(41, "_x2 120x15")], [Check(1, {}), Check(2, {OOM: [expected(41)]}),
                                          Check(16, {OOM: [expected(41)]}), Check(25, {})]),
    Scenario("two_deaths", "its successor died too: a second alert, with its own pid",
             [death(41, "_x2 120x15"), death(42, "_x6 360x15")],
             [Check(4, {OOM: [expected(41)]}), Check(7, {OOM: [expected(41), expected(42)]})]),
]


def _group(sc: Scenario) -> dict[str, Any]:
    results = run_evaluator(sc)
    return {
        "name": sc.name, "interval": f"{STEP_S}s",
        "input_series": [{"series": s, "values": v} for s, v in sc.series],
        "alert_rule_test": [
            {"eval_time": f"{m}m", "alertname": OOM, "exp_alerts": [
                {"exp_labels": dict(sorted(a.labels.items())),
                 "exp_annotations": dict(sorted(a.annotations.items()))}
                for a in sorted((a for a in alerts if a.name == OOM),
                                key=lambda a: sorted(a.labels.items()))]}
            for m, alerts in results.items()],
    }


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.name)
def test_evaluator_verdicts(sc: Scenario) -> None:
    results = run_evaluator(sc)
    for check in sc.checks:
        want = sorted(check.firing.get(OOM, []), key=lambda d: sorted(d.items()))
        assert verdict(results[check.minute], OOM) == want, (sc.name, check.minute)


def test_annotations_name_the_dead_worker() -> None:
    (alert,) = [a for a in run_evaluator(SCENARIOS[0])[3] if a.name == OOM]
    assert alert.annotations["summary"] == (
        "Worker 41 of shard docs (backfill) died of GPU out-of-memory on cuda:0")
    assert "41-1700000000000" in alert.annotations["description"]


@pytest.mark.binaries
def test_promtool_agrees_at_every_minute(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    suite = tmp_path / "oom_test.yml"
    suite.write_text(suite_text([(sc, _group(sc)) for sc in SCENARIOS], str(RULES_FILE)),
                     encoding="utf-8")
    proc = run_promtool(promtool, suite)
    assert proc.returncode == 0, f"{suite}:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
