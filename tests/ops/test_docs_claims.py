"""The docs' claims about the code, checked against the code.

Each test reads a claim where the docs make it (a table, a drawn block, a
sentence) and checks it against what the code does, so the claim cannot go
stale: links that leave the repository, layers that are not the import
contracts, a foreign library imported by more than its one module, a state file
whose schema or version is not the one named, a rung table that is not
``kernel.rungs``, a knob without its row, measured figures in the design, a
module that says "standard library only" and imports more.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from functools import cache
from pathlib import Path

import pytest

from crawlguard.kernel import rungs
from crawlguard.kernel.settings import knob_names
from tests.helpers import REPO, crawlguard_modules

ARCH = REPO / "docs" / "architecture.md"
DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md", REPO / "deploy" / "README.md",
        REPO / "sidecar" / "runbook.md", REPO / "bench" / "README.md", REPO / "CHANGELOG.md"]
SOURCES = sorted(p for top in ("crawlguard", "exporter", "sidecar", "rules", "deploy", "bench",
                               "tests") for p in (REPO / top).rglob("*.py"))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def section(text: str, heading: str) -> str:
    """The text under ``heading`` (a Markdown heading line) up to the next heading of its
    level or above."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1:]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def table_rows(text: str) -> list[list[str]]:
    """The body rows of every Markdown table in ``text``, cells stripped."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return [r for r in rows if r]


def code(cell: str) -> str:
    return cell.strip().strip("`")


# -- links ---------------------------------------------------------------------------------


LINK = re.compile(r"\]\(([^)\s]+)\)")
UP_PATH = re.compile(r"`(\.\./[^`\s]+)`")


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_every_relative_link_resolves_to_a_file_in_the_repository(doc: Path) -> None:
    """A link (or a `../` path) must land on a file of this repository: a file beside it
    (the design card, another project's script) is not there for a reader of a clone."""
    text = doc.read_text(encoding="utf-8")
    targets = [m.group(1) for m in LINK.finditer(text)] + UP_PATH.findall(text)
    bad = []
    for target in targets:
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        if not path.is_relative_to(REPO) or not path.exists():
            bad.append(target)
    assert not bad, f"{_rel(doc)} links outside the repository or to nothing: {bad}"


def test_code_and_docs_link_to_architecture_anchors_that_exist() -> None:
    """doctor's advice (``docs/architecture.md#knobs``) and the like."""
    from tests.ops.test_docs import anchors

    have = anchors(ARCH)
    assert "knobs" in have
    for path in [*SOURCES, *DOCS]:
        for anchor in re.findall(r"architecture\.md#([\w-]+)", path.read_text(encoding="utf-8")):
            assert anchor in have, f"{_rel(path)} links architecture.md#{anchor}"


SECTION_REF = re.compile(r"((?:docs/[\w-]+|sidecar[/]runbook|README)\.md),?\s+\"([^\"]+)\"")


def named_sections(path: Path) -> str:
    """Headings and bold runs of a doc, lower case, whitespace folded: what a reference to
    one of its sections by name can point at."""
    text = path.read_text(encoding="utf-8")
    names = re.findall(r"^#{1,6}\s+(.+)$", text, flags=re.M) + re.findall(r"\*\*(.+?)\*\*", text,
                                                                         flags=re.S)
    return "\n".join(" ".join(n.replace("`", "").lower().split()) for n in names)


def test_sections_named_in_code_and_docs_exist() -> None:
    """``(docs/architecture.md, "Creation times and clocks")`` and the like: the section a
    docstring or a doc sends its reader to is still there."""
    refs = 0
    for path in [*SOURCES, *DOCS]:
        for doc, name in SECTION_REF.findall(path.read_text(encoding="utf-8")):
            wanted = " ".join(name.replace("`", "").lower().split())
            assert wanted in named_sections(REPO / doc), f"{_rel(path)}: {doc}, \"{name}\""
            refs += 1
    assert refs >= 5


# -- layers --------------------------------------------------------------------------------


@cache
def contracts() -> list[dict[str, object]]:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(data["tool"]["importlinter"]["contracts"])


def drawn_layers() -> dict[str, list[set[str]]]:
    """``layers [container]`` code blocks of architecture.md: one layer a line (or layers
    joined by ``>``), modules of one layer joined by ``|``."""
    out = {}
    for container, body in re.findall(r"^```layers ?([\w.]*)\n(.*?)^```", ARCH.read_text(),
                                      flags=re.S | re.M):
        layers = " > ".join(line.strip().lstrip(">").strip() for line in body.splitlines())
        out[container or "crawlguard"] = [{m.strip() for m in layer.split("|")}
                                          for layer in layers.split(">") if layer.strip()]
    return out


def test_the_layers_drawn_are_the_import_contracts() -> None:
    drawn = drawn_layers()
    assert {"crawlguard", "crawlguard.sidecar", "crawlguard.exporter"} <= set(drawn)
    for container, layers in drawn.items():
        (contract,) = [c for c in contracts() if c.get("type") == "layers"
                       and c.get("containers") == [container]]
        declared = [{m.strip() for m in str(layer).split("|")}
                    for layer in contract["layers"]]  # type: ignore[attr-defined]
        assert layers == declared, f"architecture.md draws {container} otherwise than pyproject"


# -- foreign libraries ---------------------------------------------------------------------


@cache
def imports_by_module() -> dict[str, set[str]]:
    """Every crawlguard module and the top-level names it imports anywhere in its body."""
    out: dict[str, set[str]] = {}
    for name in crawlguard_modules():
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        out[name] = found
    return out


def test_each_foreign_library_is_imported_by_its_one_module() -> None:
    rows = [r for r in table_rows(section(ARCH.read_text(), "## The map")) if len(r) == 3
            and not r[0].startswith("`") and r[1].startswith("`crawlguard.")]
    assert {r[0] for r in rows} >= {"psutil", "httpx", "pynvml", "win32pdh", "cryptography"}
    for library, module, _ in rows:
        users = {m for m, names in imports_by_module().items() if library in names}
        assert users == {code(module)}, f"{library} is imported by {sorted(users)}"


# -- state files ---------------------------------------------------------------------------


def _dotted(name: str) -> object:
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def test_the_state_file_table_names_each_schema_and_its_version_key() -> None:
    from crawlguard.kernel.formats.schema import StateModel

    rows = table_rows(section(ARCH.read_text(), "### State files: one schema each"))
    rows = [r for r in rows if r[0] != "file"]
    assert len(rows) >= 12
    named = set()
    for file, schema, key, _ in rows:
        model = _dotted(code(schema))
        assert isinstance(model, type) and issubclass(model, StateModel), schema
        module = sys.modules[model.__module__]
        fields = {n for n, f in model.model_fields.items()} | {
            f.alias for f in model.model_fields.values() if f.alias}
        declared = getattr(module, "VERSION_KEY", None)
        if key == "none":
            assert declared is None and not fields & {"v", "schema", "version", "model"}, file
        else:
            assert code(key) in (fields | {declared}), f"{file}: no version key {key}"
        named.add(model.__module__)
    formats = {f"crawlguard.kernel.formats.{p.stem}" for p in
               (REPO / "crawlguard" / "kernel" / "formats").glob("*.py")
               if p.stem not in ("__init__", "schema", "jsonlines")}
    assert formats <= named, f"formats without a row: {sorted(formats - named)}"


# -- rungs and knobs -----------------------------------------------------------------------


def test_the_rung_table_is_kernel_rungs() -> None:
    rows = table_rows(section(ARCH.read_text(), "### The ladder and its rungs"))
    drawn = [(r[0], int(r[1]), None if r[2] == "—" else code(r[2].removeprefix("device ")), r[3])
             for r in rows if r[0] != "rung"]
    assert drawn == [(r.name, r.level, r.effect.device, r.label) for r in rungs.TABLE]


def test_every_knob_has_its_row_in_the_knobs_table() -> None:
    """doctor's advice sends people to docs/architecture.md#knobs for the list."""
    listed = set()
    for row in table_rows(section(ARCH.read_text(), "## Knobs")):
        listed |= set(re.findall(r"HELIX_BFM_[A-Z0-9_]+", row[0]))
    assert knob_names() <= listed, sorted(knob_names() - listed)


# -- figures and promises ------------------------------------------------------------------


FIGURE = re.compile(r"\b\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)? ?(?:ms|us|µs)\b|\bp(?:50|90|99)\b")


def test_the_design_holds_no_measured_figures() -> None:
    """Figures go to bench/README.md, beside the command that printed them: in the design
    they drift from the code, and a gate stated there was failed by the figures under it."""
    found = FIGURE.findall(ARCH.read_text())
    assert not found, f"architecture.md quotes figures: {found}"


STDLIB_ONLY = re.compile(r"(?:^|[.:]\s+)Standard library only\b", flags=re.M)


def _claims_stdlib_only() -> list[str]:
    out = []
    for name in crawlguard_modules():
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin
        doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""
        if STDLIB_ONLY.search(doc):
            out.append(name)
    return out


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a name inside a module: crawlguard.kernel.errors.ConfigError
        return False


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(crawlguard modules, other top-level packages) that module ``name``'s own code
    imports, ``if TYPE_CHECKING:`` blocks left out."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin
    package = name if spec.submodule_search_locations else name.rpartition(".")[0]
    ours, foreign = set(), set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            if target.split(".")[0] != "crawlguard":
                foreign.add(target.split(".")[0])
            elif _is_module(target):
                ours.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(Path(spec.origin).read_text(encoding="utf-8")))
    return ours, foreign


def test_a_module_that_says_standard_library_only_imports_nothing_else() -> None:
    """Its own code and every crawlguard module it imports, followed through: the standard
    library and crawlguard, nothing else (what its package's ``__init__`` imports is that
    package's business)."""
    claims = _claims_stdlib_only()
    assert "crawlguard.kernel.rungs" in claims and "crawlguard.exporter.workmodel" in claims
    std = set(sys.stdlib_module_names) | {"__future__"}
    for name in claims:
        seen, todo, foreign = set(), [name], set()
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            ours, other = _imports(module)
            foreign |= other - std
            todo += [m for m in ours if m != "crawlguard"]
        assert not foreign, f"{name} says standard library only and imports {sorted(foreign)}"
