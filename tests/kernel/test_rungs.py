"""The one Rung table (crawlguard.kernel.rungs) and what derives from it.

A rung's name written as a literal anywhere but the table fails here: the
names, levels, effects and labels are said once, and the ladder, the API, the
metrics, the command line, the report and HELIX_BFM_CRAWL_ACTION derive them.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from crawlguard.kernel import rungs
from crawlguard.kernel.settings import ACTIONS
from tests.helpers import crawlguard_modules

TABLE_MODULE = "crawlguard.kernel.rungs"
DEVICE_CPU = {
    "crawlguard.refbuild.simdevice", "crawlguard.refbuild.worker",
    "crawlguard.supervisor.launchenv", "crawlguard.rules.twin",
}
"""Modules where "cpu" is a device (a torch device, a device variable's value), not the
rung: the only literal "cpu" allowed outside the table."""
WORDS = (*rungs.NAMES, rungs.NEXT)


def literals(source: str) -> list[tuple[int, str]]:
    """Line and text of every string literal equal to a rung's name (or ``next``);
    docstrings, where prose names rungs, are not literals in this sense."""
    tree = ast.parse(source)
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in WORDS and id(node) not in docs]


def test_the_table_is_a_ladder() -> None:
    assert [r.level for r in rungs.TABLE] == list(range(len(rungs.TABLE)))
    assert len(set(rungs.NAMES)) == len(rungs.NAMES) and rungs.NEXT not in rungs.NAMES
    assert rungs.NONE.level == 0 and rungs.NONE.effect.env("X") == {}
    assert rungs.TOP is rungs.TABLE[-1] and rungs.TABLE[1:] == rungs.TAKEN
    assert all(r.label for r in rungs.TABLE)
    assert [rungs.above(r.name) for r in rungs.TABLE] == [*rungs.TABLE[1:], None]
    assert rungs.CPU.effect.env("BGEM3_DEVICE") == {"BGEM3_DEVICE": "cpu"}
    assert rungs.RESTART.effect.env("BGEM3_DEVICE") == {}
    with pytest.raises(ValueError, match="unknown rung"):
        rungs.named("gpu")


def test_no_rung_name_is_written_outside_the_table() -> None:
    found: list[str] = []
    for name in crawlguard_modules():
        if name == TABLE_MODULE:
            continue
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        if not spec.origin.endswith(".py"):
            continue
        for line, word in literals(Path(spec.origin).read_text(encoding="utf-8")):
            if word == rungs.CPU.name and name in DEVICE_CPU:
                continue
            found.append(f"{name}:{line}: {word!r}")
    assert not found, "rung names belong in crawlguard.kernel.rungs.TABLE:\n" + "\n".join(found)


def test_the_scan_finds_a_planted_literal_and_ignores_prose() -> None:
    planted = '"""Prose may say restart and cpu."""\nif rung == "cpu":\n    x = {"restart": 1}\n'
    assert literals(planted) == [(2, "cpu"), (3, "restart")]


def test_what_derives_from_the_table() -> None:
    from crawlguard.cli.main import build_parser
    from crawlguard.sidecar.metrics import SidecarMetrics
    from crawlguard.sidecar.schemas import PendingRung, RungRequest, ShardView

    assert rungs.CPU.name in ACTIONS  # HELIX_BFM_CRAWL_ACTION=cpu: the CPU rung at once
    assert ShardView.model_json_schema()["properties"]["rung"]["enum"] == list(rungs.NAMES)
    assert PendingRung.model_json_schema()["properties"]["rung"]["enum"] == list(
        rungs.TAKEN_NAMES)
    assert RungRequest.model_json_schema()["properties"]["rung"]["enum"] == list(rungs.MANUAL)
    assert "0 none, 1 restart, 2 cpu" in SidecarMetrics().render().decode()
    parser = build_parser("rung")
    with pytest.raises(SystemExit):
        parser.parse_args(["rung", "s", "gpu"])
    for word in (*rungs.MANUAL, "reset"):
        assert parser.parse_args(["rung", "s", word]).rung == word
