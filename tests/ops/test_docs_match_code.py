"""The docs name what the code has: module paths, dotted names, outcomes.

Cheap checks that fail when a module moves and the prose naming it stays.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

from tests.helpers import REPO

DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md", REPO / "deploy" / "README.md",
        REPO / "sidecar" / "runbook.md", REPO / "bench" / "README.md"]
SOURCES = sorted(p for top in ("crawlguard", "exporter", "sidecar", "rules", "deploy",
                                             "bench", "tests")
                 for p in (REPO / top).rglob("*.py"))
TOP = {p.name for p in REPO.iterdir() if not p.name.startswith(".")}
FILE_SUFFIXES = {"env", "example", "exe", "json", "jsonl", "lock", "log", "md", "ps1", "py",
                 "service", "target", "token", "toml", "txt", "yml", "yaml"}
"""A dotted word ending in one of these is a file name (crawlguard.env), not a module."""

# A path: words joined by "/", not part of a URL, a template (<shard>/, {x}/) or a variable.
PATH = re.compile(r"(?<![\w./<>{}$:%-])((?:[\w.-]+/)+[\w.-]*)")
DOTTED = re.compile(r"(?<![\w./-])((?:crawlguard|exporter|sidecar)(?:\.\w+)+)")


@cache
def repo_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return out.stdout.splitlines()


@cache
def ignored() -> frozenset[str]:
    """Paths .gitignore names: made at run time (the Alertmanager token file)."""
    lines = (REPO / ".gitignore").read_text().splitlines()
    return frozenset(line.strip().lstrip("/") for line in lines)


MAPPED = {"crawlguard/exporter/": "exporter/", "crawlguard/sidecar/": "sidecar/",
          "crawlguard/rules/": "rules/", "crawlguard/deploy/": "deploy/"}
"""Installed paths (crawlguard/exporter/...) and their folders in the repository
(pyproject.toml's package-dir)."""


def unmapped(token: str) -> str:
    for installed, folder in MAPPED.items():
        if token.startswith(installed):
            return folder + token[len(installed):]
    return token


def path_exists(token: str) -> bool:
    files, made = repo_files(), ignored()
    token = token.split("#")[0].rstrip(".,:;")
    if not token or token.startswith(("./", "../")) or token in made:
        return True
    token = unmapped(token)
    if token.split("/")[0] in TOP:
        return (REPO / token).exists()
    if token.endswith(".py"):  # a path relative to its package: refbuild/verify.py
        return any(f == token or f.endswith("/" + token) for f in files)
    return True  # state-dir layout (shards/S/ladder.json) and the like


def dotted_exists(name: str) -> bool:
    parts = name.split(".")
    if parts[-1] in FILE_SUFFIXES:
        return True
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            obj = importlib.import_module(module)
            for attr in parts[i:]:
                if not hasattr(obj, attr):
                    return False
                obj = getattr(obj, attr)
            return True
    return False


def missing_paths(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    return {m.group(1) for m in PATH.finditer(text) if not path_exists(m.group(1))}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(Path(p).relative_to(REPO)))
def test_every_path_named_in_the_docs_exists(doc: Path) -> None:
    missing = missing_paths(doc)
    assert not missing, f"{doc.relative_to(REPO)} names paths that do not exist: {missing}"


def test_every_path_named_in_the_code_exists() -> None:
    """Docstrings and comments too: a moved module's old path outlives the move otherwise."""
    missing = {str(p.relative_to(REPO)): found for p in SOURCES if (found := missing_paths(p))}
    assert not missing, f"paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(Path(p).relative_to(REPO)))
def test_every_module_named_in_the_docs_exists(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    missing = {m.group(1) for m in DOTTED.finditer(text) if not dotted_exists(m.group(1))}
    assert not missing, f"{doc.relative_to(REPO)} names modules that do not exist: {missing}"


def test_metrics_doc_names_every_rung_outcome() -> None:
    from crawlguard.sidecar import actions, metrics

    doc = metrics.__doc__ or ""
    listed = set(re.findall(r"``(\w+)``", doc))
    assert set(actions.OUTCOMES) <= listed, set(actions.OUTCOMES) - listed
