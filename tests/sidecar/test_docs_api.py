"""Every sidecar endpoint the docs name is one the real sidecar serves."""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.helpers import REPO
from tests.sidecar.conftest import Live

DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md", REPO / "deploy" / "README.md"]
ENDPOINT = re.compile(r"(?<![A-Za-z_./])(/v1/[\w{}./-]*[\w}]|/healthz|/openapi\.json)")


def test_docs_name_only_endpoints_the_sidecar_serves(
        sidecar_thread: Callable[..., Live]) -> None:
    live = sidecar_thread()
    schema = live.client.get("/openapi.json").json()
    routes = [re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)) + "$")
              for path in schema["paths"]] + [re.compile(r"^/openapi\.json$")]
    named = {(doc.name, m.group(1)) for doc in DOCS
             for m in ENDPOINT.finditer(doc.read_text(encoding="utf-8"))}
    assert len(named) >= 5  # the runbook's forcing, pausing and resetting at least
    unknown = {(doc, path) for doc, path in named if not any(r.match(path) for r in routes)}
    assert not unknown, unknown
