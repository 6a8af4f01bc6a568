"""PromQL helpers for the ops tests: Grafana variables out, metric names out, promtool.

Metric names are found with a small lexer rather than a PromQL parser (none
is available offline in Python): strings, label matchers, ranges and the label
lists of by/without/on/ignoring/group_left/group_right are removed first, then
every identifier that is not a function call or a keyword is a metric name.
promtool, the real parser, checks that each expression is valid PromQL.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "crawlguard-rebuild.json"

# What Grafana substitutes before a query reaches Prometheus; any valid
# stand-in will do for a syntax check.
GRAFANA_VARIABLES: Mapping[str, str] = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "genes_remaining": "10000",
}
MULTI_VALUE_STANDIN = ".*"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)")
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str) -> str:
    """``expr`` with Grafana's variables replaced as Grafana would (roughly)."""
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return GRAFANA_VARIABLES.get(name, MULTI_VALUE_STANDIN)
    return _VAR.sub(repl, expr)


def metric_names(expr: str) -> set[str]:
    s = _STRING.sub('""', expr)
    s = re.sub(r"\{[^{}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = _LABEL_LIST.sub(" ", s)
    names = set()
    for m in _IDENT.finditer(s):
        if s[m.end():].lstrip().startswith("(") or m.group(1).lower() in KEYWORDS:
            continue
        names.add(m.group(1))
    return names


def promtool_check(exprs: Iterable[str], workdir: Path, promtool: str) -> None:
    """Fail with promtool's own message unless every expression is valid PromQL.

    Each expression becomes a recording rule of one rules file: ``promtool
    check rules`` parses every ``expr`` with Prometheus' own parser.
    """
    exprs = list(exprs)
    rules = [{"record": f"check:expr_{i}:promql", "expr": e} for i, e in enumerate(exprs)]
    path = workdir / "exprs.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    listing = "\n".join(f"  expr_{i}: {e}" for i, e in enumerate(exprs))
    assert proc.returncode == 0, f"promtool rejects:\n{proc.stdout}{proc.stderr}\n{listing}"


def recorded_names(rules_dir: Path) -> set[str]:
    """Every ``record:`` name of the rules in ``rules_dir``."""
    names = set()
    for path in sorted(rules_dir.glob("*.yml")) + sorted(rules_dir.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for group in doc.get("groups", []):
            names |= {r["record"] for r in group.get("rules", []) if "record" in r}
    return names


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every query: panel targets, annotations, variables."""
    out = []
    for p in walk_panels(dash["panels"]):
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            out.append((f"annotation {a['name']!r}", a["expr"]))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["definition"])
            assert m, f"variable {v['name']}: expected label_values(SELECTOR, LABEL)"
            out.append((f"variable {v['name']}", m.group(1)))
    return out


_ALERTNAMES = re.compile(r'ALERTS\{[^}]*?alertname\s*=~\s*"((?:[^"\\]|\\.)*)"')


def alertname_patterns(expr: str) -> list[str]:
    """The ``alertname=~"..."`` regular expressions of every ALERTS selector in ``expr``."""
    return [m.group(1).replace('\\\\', '\\') for m in _ALERTNAMES.finditer(expr)]


def alerts_left_out(patterns: Iterable[str], alerts: Iterable[str]) -> list[str]:
    """The alerts that some pattern (anchored, as PromQL's =~) does not match; a
    query without any pattern leaves every alert out."""
    patterns, alerts = list(patterns), list(alerts)
    if not patterns:
        return alerts
    return [a for a in alerts if not all(re.fullmatch(p, a) for p in patterns)]


def repeated_per(dash: dict[str, Any], variable: str) -> dict[str, bool]:
    """Title of every panel that names ``$variable`` -> whether it is drawn once per value
    (its own ``repeat`` or a repeated row above it), so its title never joins the values."""
    out: dict[str, bool] = {}
    row_repeat = None
    for p in dash["panels"]:
        if p["type"] == "row":
            row_repeat = p.get("repeat")
            inner = p.get("panels", [])  # a collapsed row holds its panels
            for q in [p, *inner]:
                if f"${variable}" in q["title"]:
                    out[q["title"]] = p.get("repeat") == variable
            continue
        if f"${variable}" in p["title"]:
            out[p["title"]] = variable in (p.get("repeat"), row_repeat)
    return out
