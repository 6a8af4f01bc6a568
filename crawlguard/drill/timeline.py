"""What a drill saw, read from the state dir: pure functions over the shard's files.

Everything a drill reports is already recorded by the parts it exercises, so it
is read, not measured by the drill itself:

- the detection: the drilled worker's lines of ``batches.jsonl`` after the onset;
  the batch whose streak reached the worker's window (its tracker's verdict), or,
  for a ``BFMShardStalled`` (a batch that never ends), the batches before the
  alert began;
- the alert, the rung, its outcome and the restart verification: the shard's
  ladder history (``ladder.json``), whose entries the sidecar writes as it judges:
  the alert's entry (kind ``drill``, or ``crawl`` with ``--keep``) and the rung
  decided with it carry the drilled worker's identity;
- the relaunch: the worker registered after the rung (``worker.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crawlguard.kernel import rungs
from crawlguard.kernel.formats.batchlog import Batch
from crawlguard.kernel.formats.ladderfile import HistoryEntry
from crawlguard.kernel.workers import Registration, WorkerIdentity

ALERT_KINDS = ("drill", "crawl")
"""History kinds of an alert that opened an episode (``drill``; ``crawl`` with --keep)."""
LADDER_SOURCES = ("drill", "alert")
"""Rungs the ladder took itself (a rung forced by hand during a drill is not one)."""
JSON_KEYS = ("shard", "acted", "rung", "onset_to_alert_s", "onset_to_signal_s",
             "detected_after_batches", "alert_path")
"""``crawlguard drill --json``: exactly these (DESIGN.md, third round)."""


def _of(entry: HistoryEntry, worker: WorkerIdentity) -> bool:
    return entry.worker is not None and WorkerIdentity.from_json(entry.worker).same_as(worker)


@dataclass(frozen=True)
class Seen:
    """The ladder's answer to the drill so far."""

    alert: HistoryEntry | None = None
    rung: HistoryEntry | None = None
    verified: HistoryEntry | None = None
    not_taken: str | None = None
    """Why the alert took no rung (alert only, paused, terminal); None otherwise."""

    @property
    def acted(self) -> bool:
        return self.rung is not None


def seen(history: Sequence[HistoryEntry], worker: WorkerIdentity, onset: float) -> Seen:
    """The first alert about ``worker`` since ``onset``, the rung the ladder took with it
    and that rung's verification. The alert and its rung are written in one save, so an
    alert without a rung means none was taken."""
    alert = next((e for e in history if e.kind in ALERT_KINDS and e.at >= onset
                  and _of(e, worker)), None)
    if alert is None:
        return Seen()
    rung = next((e for e in history if e.kind == "rung" and e.source in LADDER_SOURCES
                 and e.decided_at is not None and e.decided_at >= alert.at
                 and _of(e, worker)), None)
    if rung is None:
        after = [e for e in history if e.at >= alert.at and e.kind == "refused"]
        why = (after[0].reason if after else None) or alert.reason or "no rung taken"
        return Seen(alert=alert, not_taken=why)
    verified = next((e for e in history if e.kind == "verified" and e.id == rung.id), None)
    return Seen(alert=alert, rung=rung, verified=verified)


@dataclass(frozen=True)
class Detection:
    batches: int
    """Batches the worker finished after the onset, up to the detecting one."""
    at: float
    by: str
    """``streak`` (the rate signature held) or ``stall`` (the alert began on a batch in
    flight)."""


def detection(rows: Sequence[Batch], worker: WorkerIdentity, onset: float, window: int,
              alert: HistoryEntry | None) -> Detection | None:
    """When the drilled worker's tracker saw the crawl (``rows``: the shard's batches)."""
    mine = [b for b in rows if b.pid == worker.pid and b.t > onset]
    for n, row in enumerate(mine, 1):
        if row.streak >= window:
            return Detection(n, row.t, "streak")
    if alert is not None and alert.starts_at is not None:
        before = [b for b in mine if b.t <= alert.starts_at]
        return Detection(len(before), alert.starts_at, "stall")
    return None


@dataclass(frozen=True)
class Report:
    shard: str
    alert_path: str
    worker: WorkerIdentity
    onset: float
    seen: Seen
    detected: Detection | None
    relaunch: Registration | None
    keep: bool
    why: str = ""
    """Why the ladder did not act, when it did not."""

    @property
    def acted(self) -> bool:
        return self.seen.acted

    def _since(self, at: float | None) -> float | None:
        return None if at is None else round(at - self.onset, 3)

    def as_json(self) -> dict[str, Any]:
        """The contract's object: a time or batch count that never came is null."""
        s = self.seen
        rung = (s.rung.rung if s.rung is not None else None) or rungs.NONE.name
        return {
            "shard": self.shard,
            "acted": self.acted,
            "rung": rung,
            "onset_to_alert_s": self._since(s.alert.at if s.alert else None),
            "onset_to_signal_s": self._since(s.rung.decided_at if s.rung else None),
            "detected_after_batches": self.detected.batches if self.detected else None,
            "alert_path": self.alert_path,
        }

    def lines(self) -> list[str]:
        """The timeline for people, one event a line, seconds since the onset."""
        s, out = self.seen, []

        def at(t: float | None, what: str) -> None:
            out.append(f"  {'' if t is None else f'+{t - self.onset:.1f}s':>8}  {what}")

        at(self.onset, f"onset: worker pid {self.worker.pid} slowed")
        d = self.detected
        if d is not None:
            how = "its streak reached the window" if d.by == "streak" else "a batch in flight"
            at(d.at, f"detection: batch {d.batches} after the onset ({how})")
        if s.alert is not None:
            began = s.alert.starts_at
            since = "" if began is None else f" (firing since +{began - self.onset:.1f}s)"
            at(s.alert.at, f"alert: {s.alert.alertname} reached the sidecar{since}")
        if s.rung is not None:
            at(s.rung.decided_at, f"rung: {s.rung.rung} {s.rung.id} decided, worker signalled")
            if s.rung.outcome is not None:
                at(s.rung.effective_at, f"worker stopped: {s.rung.outcome}")
        if self.relaunch is not None:
            at(self.relaunch.registered_at, f"relaunch: worker pid {self.relaunch.pid} "
                                            "registered")
        if s.verified is not None:
            at(s.verified.at, f"verification: {s.verified.reason}")
        elif s.rung is not None and s.rung.rung == rungs.RESTART.name:
            out.append(f"  {'':>8}  verification: not recorded before the drill ended")
        if not self.acted:
            out.append(f"  the ladder did not act: {self.why or s.not_taken or 'no alert'}")
        elif self.keep:
            out.append("  --keep: counted as the shard's crawl; the ladder moved")
        else:
            out.append("  a drill: not counted as a crawl; the shard's rung and device are "
                       "unchanged")
        return out
