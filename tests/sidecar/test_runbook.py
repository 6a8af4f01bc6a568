"""Every alert's runbook link opens: the sidecar serves the rig's own copy at /runbook."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from crawlguard.rig import promstack
from crawlguard.rules.files import RUNBOOK_URL
from crawlguard.rules.twin import RULES, with_runbook
from tests.helpers import REPO
from tests.sidecar.conftest import Live


def shipped_links() -> list[str]:
    rules = yaml.safe_load((REPO / "rules" / "crawlguard.rules.yml").read_text())
    return [r["annotations"]["runbook_url"] for g in rules["groups"] for r in g["rules"]
            if "alert" in r]


def test_each_alert_link_lands_on_its_section(sidecar_thread: Callable[..., Live]) -> None:
    live = sidecar_thread()
    with httpx.Client(base_url=live.url, trust_env=False) as anon:     # no token needed
        page = anon.get("/runbook")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text and "http" not in page.text.split("<body>")[0]
    links = shipped_links()
    assert len(links) == 5  # Crawl, Stalled, CrawlOnCPU, MetricsAbsent, OOM
    for url in links:
        base, _, anchor = url.partition("#")
        assert base == RUNBOOK_URL
        assert f'id="{anchor}"' in page.text, url


def test_up_points_the_links_at_its_own_sidecar(tmp_path: Path) -> None:
    shipped = promstack.Shipped.find()
    assert shipped is not None
    rig = promstack.rig_rules(shipped, "http://127.0.0.1:4242/runbook")
    urls = [r["annotations"]["runbook_url"] for g in rig["groups"] for r in g["rules"]
            if "alert" in r]
    assert urls and all(u.startswith("http://127.0.0.1:4242/runbook#") for u in urls)
    embedded = {r.name: r.annotations["runbook_url"]
                for r in with_runbook("http://127.0.0.1:4242/runbook")}
    assert set(embedded.values()) == set(urls)
    assert {r.annotations["runbook_url"] for r in RULES} == set(shipped_links())
