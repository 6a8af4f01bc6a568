"""The docs: anchors that alerts and links rely on; commands and knobs that exist."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from crawlguard.cli import COMMANDS
from crawlguard.cli.main import build_parser, chosen_command
from crawlguard.cli.serve import CRASH_HOOK
from crawlguard.kernel.settings import SET_FOR_CHILDREN, knob_names, unknown_knobs
from tests.helpers import REPO

DOCS = REPO / "docs"
RUNBOOK = REPO / "sidecar" / "runbook.md"
ALL_DOCS = [*sorted(DOCS.glob("*.md")), RUNBOOK, REPO / "README.md", REPO / "deploy" / "README.md"]


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", text, flags=re.M)}


def test_every_alert_runbook_url_has_its_section() -> None:
    urls = []
    for path in sorted((REPO / "rules").glob("*.yml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            urls += [r["annotations"]["runbook_url"] for r in group["rules"]
                     if "alert" in r and "runbook_url" in r.get("annotations", {})]
    assert len(urls) >= 4
    have = anchors(RUNBOOK)
    for url in urls:
        page, _, anchor = url.partition("#")
        assert page == "http://127.0.0.1:9848/runbook", url   # the sidecar serves it
        assert anchor in have, f"{url}: no such section in sidecar/runbook.md"
    assert {"bfmshardcrawl", "bfmshardstalled", "bfmshardcrawloncpu", "bfmmetricsabsent"} <= have


def links(path: Path) -> list[tuple[str, str]]:
    """(target file, anchor) of every relative Markdown link with an anchor."""
    out = []
    for m in re.finditer(r"\]\(([^)\s]*?)#([^)\s]+)\)", path.read_text()):
        target = (path.parent / m.group(1)).resolve() if m.group(1) else path
        out.append((str(target), m.group(2)))
    return out


@pytest.mark.parametrize("doc", [RUNBOOK, DOCS / "deploy.md"], ids=["runbook", "deploy"])
def test_links_between_the_docs_resolve(doc: Path) -> None:
    for target, anchor in links(doc):
        assert anchor in anchors(Path(target)), f"{doc}: #{anchor} not in {target}"


def test_dashboard_points_at_existing_sections() -> None:
    text = (REPO / "deploy/grafana/dashboards/crawlguard-rebuild.json").read_text()
    json.loads(text)
    refs = re.findall(r"docs/(\w+\.md)#([\w-]+)", text)
    assert refs
    for page, anchor in refs:
        assert anchor in anchors(DOCS / page), f"dashboard links docs/{page}#{anchor}"


def command_lines(text: str) -> tuple[list[str], list[str]]:
    """``crawlguard ...`` invocations: whole lines of code blocks, and inline code spans
    (which often name a command alone: `crawlguard run`)."""
    lines = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ").strip()
            if re.match(r"crawlguard [a-z][\w-]*(\s|$)", line):
                lines.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return lines, re.findall(r"`crawlguard ([a-z][\w-]*)", prose)


def test_command_lines_in_the_docs_parse() -> None:
    """What a person copies from the docs is accepted by the real command line."""
    whole = 0
    for doc in ALL_DOCS:
        lines, spans = command_lines(doc.read_text(encoding="utf-8"))
        for name in spans:
            assert name in COMMANDS, f"{doc.name}: `crawlguard {name}` is no command"
        for line in lines:
            argv = shlex.split(line, comments=True)[1:]
            try:
                build_parser(chosen_command(argv)).parse_args(argv)
            except SystemExit as exc:
                assert exc.code == 0, f"{doc.name}: {line!r} does not parse"
            whole += 1
    assert whole >= 10  # the runbook's and the README's examples


MISSPELLED = "HELIX_BFM_CRAWL_FACTR"
"""The docs' example of a misspelled knob (doctor and `up` warn about it)."""


def test_docs_name_only_variables_crawlguard_reads() -> None:
    assert CRASH_HOOK in SET_FOR_CHILDREN and "HELIX_BFM_SHARD" in SET_FOR_CHILDREN
    assert unknown_knobs({MISSPELLED: "3"}) == [(MISSPELLED, "HELIX_BFM_CRAWL_FACTOR")]
    known = knob_names() | SET_FOR_CHILDREN | {MISSPELLED}
    for doc in ALL_DOCS:
        named = set(re.findall(r"\bHELIX_BFM_[A-Z][A-Z0-9_]*", doc.read_text(encoding="utf-8")))
        assert named <= known, f"{doc.name}: {sorted(named - known)} are not knobs"
