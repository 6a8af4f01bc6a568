"""The runbook and the deployment guide: anchors that alerts and links rely on, the figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

DOCS = REPO / "docs"


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
    have = anchors(DOCS / "runbook.md")
    for url in urls:
        page, _, anchor = url.partition("#")
        assert page == "http://127.0.0.1:9848/runbook", url   # the sidecar serves it
        assert anchor in have, f"{url}: no such section in docs/runbook.md"
    assert {"bfmshardcrawl", "bfmshardstalled", "bfmshardcrawloncpu", "bfmmetricsabsent"} <= have


def links(path: Path) -> list[tuple[str, str]]:
    """(target file, anchor) of every relative Markdown link with an anchor."""
    out = []
    for m in re.finditer(r"\]\(([^)\s]*?)#([^)\s]+)\)", path.read_text()):
        target = (path.parent / m.group(1)).resolve() if m.group(1) else path
        out.append((str(target), m.group(2)))
    return out


@pytest.mark.parametrize("doc", ["runbook.md", "deploy.md"])
def test_links_between_the_docs_resolve(doc: str) -> None:
    for target, anchor in links(DOCS / doc):
        assert anchor in anchors(Path(target)), f"{doc}: #{anchor} not in {target}"


def test_dashboard_points_at_existing_sections() -> None:
    text = (REPO / "deploy/grafana/dashboards/crawlguard-rebuild.json").read_text()
    json.loads(text)
    refs = re.findall(r"docs/(\w+\.md)#([\w-]+)", text)
    assert refs
    for page, anchor in refs:
        assert anchor in anchors(DOCS / page), f"dashboard links docs/{page}#{anchor}"


def test_runbook_carries_the_evidence() -> None:
    text = (DOCS / "runbook.md").read_text()
    for figure in ["15.3 to 2.3 genes/s", "11.85 / 12 GB", "64 genes in 47", "0.02 genes/s",
                   "66 h", "11.9 GB to 884 MiB", "byte-identical", "536.40", "546.01",
                   "Prefer No Sysmem Fallback", "expandable_segments", "empty_cache",
                   "not supported on Windows", "HELIX_BFM_CPU_BACKFILL_MAX_VRAM_GB",
                   "/v1/shards/confluence/rung", "crawlguard rung", "/v1/pause",
                   "/v1/shards/slack__eng-oncall/reset"]:
        assert figure in text, figure
