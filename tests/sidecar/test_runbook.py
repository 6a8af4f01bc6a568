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
    assert len(links) == 6  # Crawl, Stalled, CrawlOnCPU, MetricsAbsent, MetricsFileCorrupt, OOM
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


def alert_table() -> dict[str, tuple[str, str, str]]:
    """The runbook's alert table: alert -> (severity, who acts, section link)."""
    text = (REPO / "sidecar" / "runbook.md").read_text(encoding="utf-8")
    start = text.index("| alert | severity | who acts | section |")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        name, severity, who, section = (c.strip() for c in line.strip("|").split("|"))
        rows[name] = (severity, who, section)
    return rows


def test_the_alert_table_lists_every_alert_of_the_rules_as_routed() -> None:
    """Read from the rules and the shipped route, not listed here: an alert added to the
    rules and not to the table fails this test, and so does a wrong severity or a
    wrong "who acts"."""
    from crawlguard import deploy
    from crawlguard.kernel import promconfig
    from crawlguard.rules.files import FLEET_RULES_FILE, RULES_FILE

    rules = promconfig.alert_rules(promconfig.rule_groups([RULES_FILE, FLEET_RULES_FILE]))
    routed = promconfig.alert_receivers([RULES_FILE, FLEET_RULES_FILE],
                                        promconfig.load_yaml(deploy.ALERTMANAGER))
    urls = {r["alert"]: r["annotations"]["runbook_url"]
            for path in (RULES_FILE, FLEET_RULES_FILE)
            for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]
            if "alert" in r}
    table = alert_table()
    assert sorted(table) == sorted(a.name for a in rules)
    assert "BFMShardOOM" in table
    for alert in rules:
        severity, who, section = table[alert.name]
        assert severity == alert.labels["severity"], alert.name
        to_sidecar = promconfig.SIDECAR_RECEIVER in routed[alert.name]
        assert who.startswith("the sidecar" if to_sidecar else "a person"), (alert.name, who)
        anchor = urls[alert.name].partition("#")[2]
        assert section == f"[{alert.name}](#{anchor})", (alert.name, section)
