"""``audit.jsonl``: the sidecar's decisions, one JSON object a line, and its schema.

Every decision is written here (alerts received and how each was judged,
rungs decided and their outcomes, manual requests, resets, pause/resume),
including those ``ladder.json`` keeps no trace of, such as exact repeats. It is
for people after the fact; the ladder files stay the only source of truth.
``line`` formats a line (the sidecar's ``AuditLog`` appends it); ``read`` is the
one reader (tests, and ``crawlguard report`` for a shard whose ladder has no
usable history). Each line has ``at`` (unix seconds) and ``event``; the other
fields depend on the event, for example::

    {"at": 1714557600.1, "event": "alert", "shard": "confluence",
     "alertname": "BFMShardCrawl", "status": "firing", "fingerprint": "...",
     "decision": "rung", "note": "restart decided (BFMShardCrawl crawl #1)"}
    {"at": 1714557601.3, "event": "rung_done", "shard": "confluence", "id": "r1",
     "rung": "restart", "outcome": "signalled", "effective_at": 1714557601.3}

A line that breaks ``AuditLine`` (cut by a crash, edited) is skipped and counted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ConfigDict

from .jsonlines import read_lines
from .schema import StateModel, Time, validate_line


class AuditLine(StateModel):
    """One line; the fields named here are typed, the event's others are kept as they are."""

    model_config = ConfigDict(extra="allow")

    at: Time
    event: str
    shard: str | None = None
    id: str | None = None
    rung: str | None = None
    outcome: str | None = None
    reason: str | None = None


def line(at: float, event: str, fields: Mapping[str, Any]) -> str:
    """One line (without its newline); values JSON cannot hold are written as text."""
    return json.dumps({**fields, "at": at, "event": event}, sort_keys=True, default=str)


def parse_line(obj: Mapping[str, Any]) -> AuditLine | None:
    return validate_line(AuditLine, obj)


def read(path: Path) -> tuple[list[AuditLine], int]:
    """Every readable line of ``path``, oldest first, and how many lines were not."""
    return read_lines(path, parse_line)
