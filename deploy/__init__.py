"""The shipped deploy configs (``crawlguard.deploy``): what a rig runs with.

Package data of this package (pyproject.toml lists it): the Prometheus and
Alertmanager configs ``crawlguard up`` starts the real stack from (and
``crawlguard fleet generate`` shapes the central host's from), and the Grafana
dashboards. In a checkout they are the files under ``deploy/``; a wheel
installs them beside this module. Everything else under ``deploy/`` (systemd
units, Windows scripts, Kubernetes manifests) is for people, not for the
program, and is not installed. Standard library only.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMETHEUS = HERE / "prometheus" / "prometheus.yml"
ALERTMANAGER = HERE / "alertmanager" / "alertmanager.yml"
DASHBOARD = HERE / "grafana" / "dashboards" / "crawlguard-rebuild.json"
FLEET_DASHBOARD = HERE / "grafana" / "dashboards" / "crawlguard-fleet.json"
"""The fleet's overview (rigs x shards); ``crawlguard fleet generate`` copies both."""
