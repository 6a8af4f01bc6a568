"""Where the shipped files are: ``rules/``, ``deploy/`` and the runbook.

They live once, at the top of the repository. A source checkout or an
editable install reads them there. A wheel carries the same files as package
data under ``crawlguard/_shipped/`` (copied at build time by ``setup.py``'s
``build_py``; nothing in the repository is a second copy that could drift),
read through ``importlib.resources``. Every piece of code that needs one of
them asks ``locate()``; nothing else knows either layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

# The files a rig cannot run the real Prometheus path without.
RULES = "rules/crawlguard.rules.yml"
PROMETHEUS = "deploy/prometheus/prometheus.yml"
ALERTMANAGER = "deploy/alertmanager/alertmanager.yml"
RUNBOOK = "docs/runbook.md"
REQUIRED = (RULES, PROMETHEUS, ALERTMANAGER)
RUNBOOK_URL = "http://127.0.0.1:9848/runbook"
"""Every alert's ``runbook_url`` base in the shipped rules: the sidecar's GET /runbook at
its default address; ``crawlguard up`` rewrites it to the sidecar it started."""

PACKAGE_DIR = "_shipped"  # setup.py copies the files under crawlguard/_shipped/

_CHECKOUT = Path(__file__).resolve().parent.parent  # crawlguard/shipped.py -> repository root


@dataclass(frozen=True)
class ShippedRoot:
    """A folder holding ``rules/``, ``deploy/`` and ``docs/``; ``kind`` says which layout."""

    root: Path
    kind: str  # "checkout" or "wheel"

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def rules_dir(self) -> Path:
        return self.root / "rules"

    @property
    def deploy_dir(self) -> Path:
        return self.root / "deploy"

    def missing(self) -> list[str]:
        return [rel for rel in REQUIRED if not (self.root / rel).is_file()]


def _candidates() -> list[ShippedRoot]:
    wheel = Path(str(resources.files(__package__ or "crawlguard").joinpath(PACKAGE_DIR)))
    return [ShippedRoot(_CHECKOUT, "checkout"), ShippedRoot(wheel, "wheel")]


def locate() -> ShippedRoot | None:
    """The checkout's top-level folders if this is a checkout, else the wheel's copy."""
    for candidate in _candidates():
        if not candidate.missing():
            return candidate
    return None


def why_missing() -> str:
    """One line for a person: where the shipped files were looked for."""
    looked = "; ".join(f"{c.kind} {c.root} lacks {', '.join(c.missing())}"
                       for c in _candidates())
    return f"the shipped rules and deploy files were not found ({looked})"
