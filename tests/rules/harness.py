"""Runs scenario series through the embedded evaluator and writes promtool suites.

The evaluator is fed what a Prometheus instant query sees at each evaluation
time: the latest sample of each series no older than the 5-minute lookback,
unless that sample is a staleness marker. Evaluations happen at every step of
the series, as promtool evaluates the rule group at every
``evaluation_interval`` (both are one minute here).
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crawlguard.rules import Alert, Evaluator, Sample, Snapshot
from crawlguard.rules.evaluator import FIRING
from crawlguard.rules.samples import label_set

from .scenarios import ALERTNAMES, STEP_S, Scenario

LOOKBACK_S = 300.0
STALE = "stale"
REPO = Path(__file__).resolve().parents[2]
RULES_FILE = REPO / "rules" / "crawlguard.rules.yml"
SHIPPED_SUITE = REPO / "rules" / "tests" / "crawlguard_test.yml"

_SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_EXPAND = re.compile(r"^([-+]?[0-9]*\.?[0-9]+)(?:([-+][0-9]*\.?[0-9]+))?x([0-9]+)$")


def expand(values: str) -> list[float | str | None]:
    """promtool's expanding notation -> one entry per step (None = missing).

    ``a+bxn`` accumulates like promtool (k += b), so values are bit-identical."""
    out: list[float | str | None] = []
    for tok in values.split():
        if tok == "_":
            out.append(None)
        elif tok == STALE:
            out.append(STALE)
        elif tok.startswith("_x"):
            out.extend([None] * int(tok[2:]))
        elif "x" in tok:
            m = _EXPAND.match(tok)
            if not m:
                raise ValueError(f"unsupported series token {tok!r}")
            k, step, n = float(m.group(1)), float(m.group(2) or 0), int(m.group(3))
            for _ in range(n + 1):
                out.append(k)
                k += step
        else:
            out.append(float(tok))
    return out


def parse_selector(sel: str) -> tuple[str, dict[str, str]]:
    m = _SERIES.match(sel)
    if not m:
        raise ValueError(f"bad series selector {sel!r}")
    labels = {lm.group(1): lm.group(2) for lm in _LABEL.finditer(m.group(2))}
    return m.group(1), labels


@dataclass(frozen=True)
class Series:
    name: str
    labels: dict[str, str]
    values: list[float | str | None]

    def at(self, t: float) -> tuple[float, float] | None:
        """(timestamp, value) an instant query at ``t`` returns, or None."""
        i = min(int(t // STEP_S), len(self.values) - 1)
        while i >= 0:
            v = self.values[i]
            ts = i * STEP_S
            if ts < t - LOOKBACK_S:
                return None
            if v is not None:
                return None if v == STALE else (float(ts), float(v))
            i -= 1
        return None


def load_series(pairs: Iterable[tuple[str, str]]) -> list[Series]:
    out = []
    for sel, values in pairs:
        name, labels = parse_selector(sel)
        out.append(Series(name, labels, expand(values)))
    return out


def snapshot_at(series: Sequence[Series], t: float) -> Snapshot:
    samples = []
    for s in series:
        hit = s.at(t)
        if hit is not None:
            samples.append(Sample(s.name, label_set(s.labels), hit[1], hit[0]))
    return Snapshot(samples)


def run_evaluator(sc: Scenario, last_minute: int | None = None) -> dict[int, list[Alert]]:
    """Firing alerts of the evaluator at every minute 0..last_minute."""
    series = load_series(sc.series)
    ev = Evaluator()
    out: dict[int, list[Alert]] = {}
    for minute in range((sc.last_minute if last_minute is None else last_minute) + 1):
        t = float(minute * STEP_S)
        out[minute] = [a for a in ev.evaluate(snapshot_at(series, t), t) if a.state == FIRING]
    return out


def verdict(alerts: Iterable[Alert], alertname: str) -> list[dict[str, str]]:
    found = [dict(a.labels) for a in alerts if a.name == alertname]
    return sorted(found, key=lambda d: sorted(d.items()))


# -- promtool suites ----------------------------------------------------------
def _alert_test(minute: int, alertname: str, alerts: Iterable[Alert]) -> dict[str, Any]:
    chosen = sorted((a for a in alerts if a.name == alertname),
                    key=lambda a: sorted(a.labels.items()))
    return {"eval_time": f"{minute}m", "alertname": alertname,
            "exp_alerts": [{"exp_labels": dict(sorted(a.labels.items())),
                            "exp_annotations": dict(sorted(a.annotations.items()))}
                           for a in chosen]}


def promtool_group(sc: Scenario, minutes: Iterable[int], results: dict[int, list[Alert]]
               ) -> dict[str, Any]:
    group: dict[str, Any] = {
        "name": sc.name,
        "interval": f"{STEP_S}s",
        "input_series": [{"series": s, "values": v} for s, v in sc.series],
        "alert_rule_test": [_alert_test(m, name, results[m])
                            for m in minutes for name in ALERTNAMES],
    }
    if sc.exprs:
        group["promql_expr_test"] = [
            {"expr": expr, "eval_time": f"{m}m",
             "exp_samples": [{"labels": lab, "value": val} for lab, val in samples]}
            for m, expr, samples in sc.exprs]
    return group


def suite_text(groups: Sequence[tuple[Scenario, dict[str, Any]]], rule_file: str,
               header: str = "") -> str:
    parts = [header, f"rule_files:\n  - {rule_file}\nevaluation_interval: {STEP_S}s\ntests:\n"]
    for sc, group in groups:
        why = textwrap.wrap(f"{sc.name}: {sc.why}", 96)
        parts.append("".join(f"  # {line}\n" for line in why))
        dumped = yaml.safe_dump([group], sort_keys=False, width=4096, allow_unicode=True)
        parts.append("".join(f"  {line}\n" for line in dumped.splitlines()))
    return "".join(parts)


def run_promtool(promtool: str, suite: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, "test", "rules", str(suite)], capture_output=True,
                          text=True, timeout=120, cwd=suite.parent, check=False)
