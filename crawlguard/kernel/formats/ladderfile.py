"""``shards/<shard>/ladder.json``: the sidecar's durable ladder of one shard, and its schema.

``LadderFile`` is the one schema of the file (pydantic, strict; see ``schema``);
``read`` is the one reader and ``write`` the one writer. The sidecar maps the
document to its ``ShardLadder`` and back (``crawlguard.sidecar.state``);
``crawlguard.sidecar.resume`` (every supervisor loop), the report and the
rig's displays read it here too, so all of them accept and refuse the same
files. Version 1::

    {
      "schema": 1,                          # the version (absent: 1, the first release)
      "shard": "confluence",
      "crawls": 2,                          # crawl episodes counted
      "rung": "none" | "restart" | "cpu",   # the highest rung taken (kernel.rungs.TABLE)
      "env": {"BGEM3_DEVICE": "cpu"},       # resume overrides (sidecar/resume.py)
      "pending": null | {"id": "r2", "rung": "cpu", "decided_at": 1.0,
                         "worker": null | {"pid": 1, "create_time": 1.0},
                         "source": "alert" | "manual" | "drill", "reason": "..."},
      "episode": null | {"worker": "<pid>-<ms>" | null, "opened_at": 1.0,
                         "alertname": "...", "fingerprint": "...", "starts_at": 1.0},
      "last_rung_decided_at": null | 1.0,
      "last_rung_effective_at": null | 1.0, # when the replaced worker was gone
      "seq": 2,                             # rung ids are "r<seq>"
      "seen": ["firing|<fingerprint>|<startsAt epoch>", ...],   # at most 256
      "history": [{"kind": "crawl" | "rung" | "refused" | "stale" | "same_episode"
                          | "no_worker" | "in_progress" | "resolved" | "reset" | "verified"
                          | "drill",
                   "at": 1.0, ...the optional fields of HistoryEntry}]  # at most 200
    }

A file that breaks the schema is ``CorruptStateError`` for its shard alone: a
resume environment is never guessed, because relaunching a demoted shard on
the GPU would bring the crawl back, and the sidecar lists the shard as
unreadable until ``reset`` sets the file aside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from crawlguard.kernel import rungs
from crawlguard.kernel.names import is_env_name
from crawlguard.kernel.rungs import RungName, TakenRungName
from crawlguard.kernel.statedir import write_json_atomic

from .schema import StateModel, Time, WorkerJson, read_file, validate

VERSION = 1
VERSION_KEY = "schema"
HINT = "; fix or delete it, or reset the shard"


def _env_name(name: str) -> str:
    if not is_env_name(name):
        raise ValueError(f"{name!r} is not an environment variable name")
    return name


EnvName = Annotated[str, AfterValidator(_env_name)]


class PendingRung(StateModel):
    """A rung decided and written, not yet carried out to the end."""

    id: str
    rung: TakenRungName
    decided_at: Time
    worker: WorkerJson | None = None
    """The worker to act on; null for a manual rung of a shard with no registered worker
    (nothing to signal: it completes as ``no_worker``)."""
    source: str = ""
    reason: str = ""


class Episode(StateModel):
    """The crawl episode the shard is in; closed when a rung takes effect."""

    worker: str | None = None
    opened_at: Time
    alertname: str
    fingerprint: str
    starts_at: Time


class HistoryEntry(StateModel):
    """One event of the shard's ladder; which fields are set depends on ``kind``."""

    kind: str
    at: Time
    id: str | None = None
    rung: str | None = None
    """A rung's name, or ``next`` in a refused manual request."""
    source: str | None = None
    reason: str | None = None
    alertname: str | None = None
    fingerprint: str | None = None
    starts_at: Time | None = None
    worker: WorkerJson | None = None
    decided_at: Time | None = None
    effective_at: Time | None = None
    outcome: str | None = None
    shared_bytes: int | None = Field(default=None, ge=0)
    """``verified`` entries: the new worker's shared GPU memory (sidecar/verify.py)."""
    rate_ratio: float | None = None
    """``verified`` entries: the new worker's median rate / the shard's baseline."""


class LadderFile(StateModel):
    version: int = Field(default=VERSION, alias="schema", ge=1, le=VERSION)  # VERSION_KEY
    shard: str | None = None
    crawls: int = Field(default=0, ge=0)
    rung: RungName = rungs.NONE.name
    env: dict[EnvName, str] = Field(default_factory=dict)
    pending: PendingRung | None = None
    episode: Episode | None = None
    last_rung_decided_at: Time | None = None
    last_rung_effective_at: Time | None = None
    seq: int = Field(default=0, ge=0)
    seen: list[str] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)


def parse(data: Any, where: str = "ladder.json") -> LadderFile:
    """A parsed ladder document as ``LadderFile``; ``CorruptStateError`` naming ``where``."""
    return validate(LadderFile, data, where, "a ladder", HINT)


def read(path: Path) -> LadderFile | None:
    """The ladder in ``path``; ``None`` when the shard has none; ``CorruptStateError``
    when it is not one crawlguard wrote (``StateError`` when it cannot be read)."""
    return read_file(LadderFile, path, "a ladder", HINT)


def dump(doc: LadderFile) -> dict[str, Any]:
    """``doc`` as the file holds it: history entries without their unset fields."""
    out = doc.model_dump(mode="json", by_alias=True)
    out["history"] = [e.model_dump(mode="json", exclude_none=True) for e in doc.history]
    return out


def write(path: Path, doc: LadderFile) -> None:
    """Replace ``path`` with ``doc`` stamped with this version, durably (atomic, fsynced)."""
    write_json_atomic(path, dump(doc.model_copy(update={"version": VERSION})))
