"""Where the shipped rules are, and the base of every alert's runbook link.

``crawlguard.rules.yml`` is package data of ``crawlguard.rules``: in a
checkout it is ``rules/crawlguard.rules.yml``; a wheel installs it beside this
module. Standard library only.
"""

from __future__ import annotations

from pathlib import Path

RULES_FILE = Path(__file__).resolve().with_name("crawlguard.rules.yml")

RUNBOOK_URL = "http://127.0.0.1:9848/runbook"
"""Every alert's ``runbook_url`` base in the shipped rules: the sidecar's GET /runbook at
its default address; ``crawlguard up`` rewrites it to the sidecar it started."""
