"""``GET /runbook``: the rig's own copy of the runbook (``runbook.md`` beside this module).

Every alert's ``runbook_url`` is ``<sidecar>/runbook#<anchor>``: the shipped
rules name the sidecar's default address (http://127.0.0.1:9848), and
``crawlguard up`` rewrites them to the sidecar it started. The page is the
Markdown itself, escaped, with each heading given GitHub's anchor, so the
fragment lands on the section. Nothing is loaded from anywhere else.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

RUNBOOK_FILE = Path(__file__).resolve().with_name("runbook.md")
"""Package data of ``crawlguard.sidecar``: the operator's runbook, served at GET /runbook."""

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def render(markdown: str) -> str:
    out = ['<!doctype html><html><head><meta charset="utf-8"><title>crawlguard runbook'
           '</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto}'
           "pre{white-space:pre-wrap}</style></head><body>"]
    block: list[str] = []
    fenced = False

    def flush() -> None:
        if block:
            out.append("<pre>" + html.escape("\n".join(block)) + "</pre>")
            block.clear()

    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else _HEADING.match(line)
        if m is None:
            block.append(line)
            continue
        flush()
        level, text = len(m.group(1)), m.group(2)
        out.append(f'<h{level} id="{html.escape(anchor(text))}">{html.escape(text)}</h{level}>')
    flush()
    out.append("</body></html>")
    return "".join(out)


def page() -> str | None:
    """The rendered runbook; None when this installation has no copy."""
    if not RUNBOOK_FILE.is_file():
        return None
    return render(RUNBOOK_FILE.read_text(encoding="utf-8"))
