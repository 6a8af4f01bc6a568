"""Request and response bodies of the sidecar API (they make its OpenAPI schema).

Kept apart from the ladder's own dataclasses so the wire format is stated once,
here, and a change to the internals cannot silently change the API.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from crawlguard.kernel.rungs import ManualRungName, RungName, TakenRungName
from crawlguard.kernel.settings import ActionName
from crawlguard.kernel.workers import WorkerIdentity

from .ladder import Entry, Pending, ShardLadder


class Worker(BaseModel):
    pid: int
    create_time: float


class PendingRung(BaseModel):
    """A rung decided and persisted, being carried out."""

    id: str
    rung: TakenRungName
    decided_at: float
    worker: Worker | None
    source: str
    reason: str


class HistoryEntry(BaseModel):
    """One event of a shard's ladder; which fields are set depends on ``kind``
    (crawl, rung, refused, stale, same_episode, in_progress, resolved, reset,
    verified, drill)."""

    kind: str
    at: float
    id: str | None = None
    rung: str | None = None
    source: str | None = None
    reason: str | None = None
    alertname: str | None = None
    fingerprint: str | None = None
    starts_at: float | None = None
    worker: Worker | None = None
    decided_at: float | None = Field(default=None, description="when the rung was decided")
    effective_at: float | None = Field(
        default=None, description="when the replaced worker was gone (or the decision time "
                                  "when there was no worker)")
    outcome: str | None = Field(
        default=None, description="signalled, killed, already_gone, identity_mismatch, "
                                  "no_worker, error; null while in progress")
    shared_bytes: int | None = Field(
        default=None, description="verified entries: the new worker's shared GPU memory")
    rate_ratio: float | None = Field(
        default=None, description="verified entries: the new worker's rate / baseline")


class ShardView(BaseModel):
    shard: str
    crawls: int = Field(description="crawl episodes counted")
    rung: RungName = Field(description="the highest rung taken")
    env: dict[str, str] = Field(description="resume overrides (what `crawlguard env` prints)")
    history: list[HistoryEntry]
    pending: PendingRung | None = Field(description="the rung in progress, if any")
    last_rung_decided_at: float | None
    last_rung_effective_at: float | None
    paused: bool
    action: ActionName


class UnreadableShard(BaseModel):
    shard: str
    error: str = Field(description="why its ladder cannot be read; `crawlguard rung SHARD "
                                   "reset` repairs it")


class ShardsView(BaseModel):
    action: ActionName
    paused: bool
    shards: list[ShardView] = Field(description="every shard whose ladder is readable")
    unreadable: list[UnreadableShard] = Field(
        default_factory=list, description="shards whose ladder.json is corrupt or unreadable")


class RungRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rung: ManualRungName
    reason: str = Field(default="", max_length=500)


class ReasonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500)


class PauseView(BaseModel):
    paused: bool


class AlertDecision(BaseModel):
    alertname: str
    status: str
    fingerprint: str
    shard: str | None
    decision: str = Field(
        description="rung, alert_only, terminal, refused, duplicate, same_episode, stale, "
                    "in_progress, resolved, no_worker; refused alone, the rest of the "
                    "notification judged: malformed_alert, unknown_alertname, "
                    "unsafe_shard, unsafe_worker, unknown_shard; state_error (the request "
                    "then answers 500)")
    note: str


class AlertsAccepted(BaseModel):
    received: int
    decisions: list[AlertDecision]


class Health(BaseModel):
    status: Literal["ok"]
    paused: bool
    action: ActionName
    rungs_in_progress: int


class ErrorBody(BaseModel):
    detail: str


def _worker(worker: WorkerIdentity | None) -> Worker | None:
    return None if worker is None else Worker(pid=worker.pid, create_time=worker.create_time)


def _pending(p: Pending | None) -> PendingRung | None:
    if p is None:
        return None
    return PendingRung(id=p.id, rung=p.rung, decided_at=p.decided_at, worker=_worker(p.worker),
                       source=p.source, reason=p.reason)


def _entry(e: Entry) -> HistoryEntry:
    return HistoryEntry(kind=e.kind, at=e.at, id=e.id, rung=e.rung, source=e.source,
                        reason=e.reason, alertname=e.alertname, fingerprint=e.fingerprint,
                        starts_at=e.starts_at, worker=_worker(e.worker), decided_at=e.decided_at,
                        effective_at=e.effective_at, outcome=e.outcome,
                        shared_bytes=e.shared_bytes, rate_ratio=e.rate_ratio)


def shard_view(state: ShardLadder, paused: bool, action: str) -> ShardView:
    return ShardView(
        shard=state.shard, crawls=state.crawls, rung=state.rung, env=dict(state.env),
        history=[_entry(e) for e in state.history], pending=_pending(state.pending),
        last_rung_decided_at=state.last_rung_decided_at,
        last_rung_effective_at=state.last_rung_effective_at, paused=paused, action=action)
