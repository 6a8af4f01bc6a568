"""The shipped rules (via promtool) and the embedded evaluator agree.

- every scenario of the table: the evaluator reproduces the hand-written
  verdicts (promtool is held to the same verdicts by the shipped suite);
- dense: at EVERY minute of every scenario, plus seeded random scenarios on
  the thresholds, promtool confirms the evaluator's firing alerts, labels and
  rendered annotations.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import require_binary

from .fuzz import MINUTES, random_scenarios
from .gen_promtool_suite import check_table
from .harness import RULES_FILE, promtool_group, run_evaluator, run_promtool, suite_text
from .scenarios import ALERTNAMES, SCENARIOS, Scenario

FUZZ_SEED = 20240611
FUZZ_COUNT = 16


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.name)
def test_evaluator_gives_the_table_verdicts(sc: Scenario) -> None:
    check_table(sc)


def test_fuzz_scenarios_exercise_every_alert() -> None:
    # Guards against a vacuous fuzz: each alert must both fire and not fire.
    fired: Counter[str] = Counter()
    evaluations = 0
    for sc in random_scenarios(FUZZ_SEED, FUZZ_COUNT):
        for alerts in run_evaluator(sc, MINUTES).values():
            evaluations += 1
            fired.update({a.name for a in alerts})
    for name in ALERTNAMES:
        assert 0 < fired[name] < evaluations, (name, fired, evaluations)


@pytest.mark.binaries
def test_promtool_agrees_with_evaluator_at_every_step(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    groups = []
    table = [(sc, sc.last_minute) for sc in SCENARIOS]
    fuzz = [(sc, MINUTES) for sc in random_scenarios(FUZZ_SEED, FUZZ_COUNT)]
    for sc, last in table + fuzz:
        results = run_evaluator(sc, last)
        groups.append((sc, promtool_group(sc, range(last + 1), results)))
    suite = tmp_path / "dense_test.yml"
    suite.write_text(suite_text(groups, str(RULES_FILE)), encoding="utf-8")
    proc = run_promtool(promtool, suite)
    assert proc.returncode == 0, (
        f"Prometheus and the embedded evaluator disagree ({suite}):\n"
        f"{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}")
