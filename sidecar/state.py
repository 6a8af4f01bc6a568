"""The durable ladder of every shard, and the pause switch: one ``LadderStore`` per sidecar.

What the files hold is their schemas' business: ``shards/<shard>/ladder.json``
is ``crawlguard.kernel.formats.ladderfile.LadderFile``, the pause switch
``<state>/sidecar.json`` is ``crawlguard.kernel.formats.pausefile.PauseSwitch``.
This module maps a ``LadderFile`` to the pure ladder's ``ShardLadder`` and back.

Every change is a read-modify-write under ``LadderStore.lock()`` (this
process's mutex, then ``StateDir.lock()``, the lock every writer of shard state
shares), and every write is an atomic replace that is fsync'd before ``save``
returns: a decision is durable before anyone is told about it. A shard's
``env`` is the resume environment that ``crawlguard.sidecar.resume.resume_env``
(and so every supervisor loop) reads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from crawlguard.kernel.formats import ladderfile, pausefile
from crawlguard.kernel.formats.ladderfile import LadderFile
from crawlguard.kernel.formats.pausefile import PauseSwitch
from crawlguard.kernel.formats.schema import WorkerJson
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import WorkerIdentity

from .ladder import Entry, Episode, Pending, ShardLadder


def _worker(w: WorkerJson | None) -> WorkerIdentity | None:
    return None if w is None else WorkerIdentity.from_json(w)


def _worker_json(w: WorkerIdentity | None) -> WorkerJson | None:
    return None if w is None else WorkerJson.of(w)


def to_file(state: ShardLadder) -> LadderFile:
    """``state`` as its ladder file (validated: what is written can be read back)."""
    p, e = state.pending, state.episode
    pending = None if p is None else ladderfile.PendingRung(
        id=p.id, rung=p.rung, decided_at=p.decided_at, worker=_worker_json(p.worker),
        source=p.source, reason=p.reason)
    episode = None if e is None else ladderfile.Episode(
        worker=e.worker, opened_at=e.opened_at, alertname=e.alertname,
        fingerprint=e.fingerprint, starts_at=e.starts_at)
    history = [ladderfile.HistoryEntry(
        kind=h.kind, at=h.at, id=h.id, rung=h.rung, source=h.source, reason=h.reason,
        alertname=h.alertname, fingerprint=h.fingerprint, starts_at=h.starts_at,
        worker=_worker_json(h.worker), decided_at=h.decided_at, effective_at=h.effective_at,
        outcome=h.outcome, shared_bytes=h.shared_bytes, rate_ratio=h.rate_ratio)
        for h in state.history]
    return LadderFile(
        shard=state.shard, crawls=state.crawls, rung=state.rung, env=dict(state.env),
        pending=pending, episode=episode, last_rung_decided_at=state.last_rung_decided_at,
        last_rung_effective_at=state.last_rung_effective_at, seq=state.seq,
        seen=list(state.seen), history=history)


def from_file(shard: str, doc: LadderFile) -> ShardLadder:
    """The pure ladder's view of a ladder file (of ``shard``: the file's path decides)."""
    p, e = doc.pending, doc.episode
    pending = None if p is None else Pending(
        id=p.id, rung=p.rung, decided_at=p.decided_at, worker=_worker(p.worker),
        source=p.source, reason=p.reason)
    episode = None if e is None else Episode(
        worker=e.worker, opened_at=e.opened_at, alertname=e.alertname,
        fingerprint=e.fingerprint, starts_at=e.starts_at)
    history = tuple(Entry(
        kind=h.kind, at=h.at, id=h.id, rung=h.rung, source=h.source, reason=h.reason,
        alertname=h.alertname, fingerprint=h.fingerprint, starts_at=h.starts_at,
        worker=_worker(h.worker), decided_at=h.decided_at, effective_at=h.effective_at,
        outcome=h.outcome, shared_bytes=h.shared_bytes, rate_ratio=h.rate_ratio)
        for h in doc.history)
    return ShardLadder(
        shard=shard, crawls=doc.crawls, rung=doc.rung, env=dict(doc.env), pending=pending,
        episode=episode, last_rung_decided_at=doc.last_rung_decided_at,
        last_rung_effective_at=doc.last_rung_effective_at, seq=doc.seq,
        seen=tuple(doc.seen), history=history)


class LadderStore:
    """Load and save shard ladders and the pause switch of one state dir; the sidecar
    holds one (the engine, the rungs' threads and the verifier share it)."""

    def __init__(self, state_dir: StateDir) -> None:
        self.dir = state_dir
        self._mutex = threading.Lock()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Held around every read-modify-write of a ladder or the pause switch."""
        with self._mutex, self.dir.lock():
            yield

    def load(self, shard: str) -> ShardLadder:
        """The shard's ladder (empty when it has none); ``CorruptStateError`` when its file
        is not one crawlguard wrote, ``StateError`` when it cannot be read."""
        doc = ladderfile.read(self.dir.ladder_file(ShardName.parse(shard)))
        return ShardLadder(shard=shard) if doc is None else from_file(shard, doc)

    def save(self, state: ShardLadder) -> None:
        """Replace the shard's ladder (under ``lock()``), durably."""
        ladderfile.write(self.dir.ladder_file(state.shard), to_file(state))

    def shards(self) -> list[str]:
        """Shards that have a ladder file (or something in its place)."""
        return [s for s in self.dir.shards() if self.dir.ladder_file(s).exists()]

    def paused(self) -> PauseSwitch:
        """The pause switch; ``CorruptStateError`` when its file is not one crawlguard wrote."""
        return pausefile.read(self.dir.pause_file) or PauseSwitch(paused=False)

    def set_paused(self, paused: bool, since: float, reason: str) -> None:
        """Write the pause switch (under ``lock()``), durably."""
        pausefile.write(self.dir.pause_file, PauseSwitch(paused=paused, since=since,
                                                         reason=reason))
