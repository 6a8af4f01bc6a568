"""Where the shipped rules are, and the base of every alert's runbook link.

``crawlguard.rules.yml`` (and the fleet's ``fleet/crawlguard-fleet.rules.yml``)
are package data of ``crawlguard.rules``: in a checkout they are under
``rules/``; a wheel installs them beside this module. Standard library only.
"""

from __future__ import annotations

from pathlib import Path

RULES_FILE = Path(__file__).resolve().with_name("crawlguard.rules.yml")
FLEET_RULES_FILE = Path(__file__).resolve().parent / "fleet" / "crawlguard-fleet.rules.yml"
"""The fleet's own rule (BFMRigDown), loaded by a fleet's central Prometheus only."""

RUNBOOK_URL = "http://127.0.0.1:9848/runbook"
"""Every alert's ``runbook_url`` base in the shipped rules: the sidecar's GET /runbook at
its default address; ``crawlguard up`` rewrites it to the sidecar it started."""
