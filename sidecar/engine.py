"""The sidecar's core: ladder decisions recorded, and rungs carried out.

``Engine`` composes the parts: one ``LadderStore`` (ladder files, the pause
switch and the lock around every read-modify-write; the rungs' threads and
the verifier use the same one), ``AlertJudge`` (webhook notifications),
``RungRunner`` (rungs carried out on threads of their own), the audit log and
the metrics. Every decision is boring on purpose: lock, load the shard's
ladder, apply the pure ``crawlguard.sidecar.ladder`` rule, save it (atomic
replace, fsync'd), answer. Alertmanager calls about once a minute per shard;
there is no cache and no deferred write, so a decision is durable before
anyone is told about it. A rung is written as ``pending`` (with the identity
of the worker to act on, and for a rung with a device effect the new ``env``)
BEFORE anything is signalled. When the action ends, its outcome and
``effective_at`` are written and ``pending`` is cleared.

Crash safety: if the sidecar dies anywhere after the write, the next start
finds ``pending`` and carries the action out then (``Engine.start``). That is
idempotent because the action re-verifies the worker's identity first: a
worker that is already gone or whose pid was reused is never signalled, and
the worker that replaced it is a different identity. A decision is never
repeated either, since the alert key that caused it was saved in the same write.

Test hook: ``after_decide`` runs right after a pending rung is written and
before it is acted on; ``crawlguard sidecar`` sets it to ``os._exit`` when
HELIX_BFM_TEST_CRASH_AFTER_DECIDE=1, to simulate that crash without sleeps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from crawlguard.kernel import rungs
from crawlguard.kernel.drills import live_drill
from crawlguard.kernel.errors import (
    CorruptStateError,
    CrawlguardError,
    RungRefused,
    StateError,
    UnknownShardError,
)
from crawlguard.kernel.logs import Outages, get_logger
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.settings import Remediation
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import WorkerIdentity, read_registration
from crawlguard.sidecar import ladder

from .audit import AuditLog
from .judging import AlertJudge
from .ladder import Context, Mode, Pending, ShardLadder, Transition
from .metrics import SidecarMetrics
from .rungs import RungRunner
from .state import LadderStore
from .webhook import AlertOutcome, WebhookPayload

log = get_logger(__name__)


class Engine:
    def __init__(self, state_dir: StateDir, remediation: Remediation,
                 clock: Callable[[], float] = time.time,
                 after_decide: Callable[[str, Pending], None] | None = None) -> None:
        self.dir = state_dir
        self.remediation = remediation
        self.mode: Mode = ladder.mode_of(remediation.action)
        self.clock = clock
        self.store = LadderStore(state_dir)
        self.audit = AuditLog(state_dir.audit_log, clock)
        self.metrics = SidecarMetrics()
        self.paused = False
        self.rungs = RungRunner(state_dir, self.store, self.metrics, self.audit,
                                remediation.grace_seconds, clock, after_decide)
        self.alerts = AlertJudge(self.store, self.rungs, self.metrics, self.audit,
                                 self._context)
        # Read at every alert of the shard (Alertmanager repeats them): logged once.
        self._registrations = Outages(log, "shard %s: worker registration", logging.ERROR)

    def judge(self, payload: WebhookPayload) -> list[AlertOutcome]:
        """Judge a notification; its decisions are durable when this returns."""
        return self.alerts.judge(payload)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Load the pause switch and every ladder; finish rungs a crash interrupted."""
        self.dir.ensure()
        with self.store.lock():
            try:
                self.paused = self.store.paused().paused
            except StateError as exc:
                # Not knowing whether a person paused the sidecar, it takes no rungs until
                # one says so (POST /v1/resume rewrites the switch).
                log.error("%s; starting paused", exc)
                self.paused = True
            self.metrics.paused.set(1 if self.paused else 0)
            for shard in self.store.shards():
                try:
                    state = self.store.load(shard)
                except CrawlguardError as exc:
                    log.error("shard %s: %s", shard, exc)
                    continue
                self.metrics.shard_state(shard, state.rung, state.pending is not None)
                if state.pending is not None:
                    self.audit.write("recover", shard=shard, id=state.pending.id,
                                     rung=state.pending.rung)
                    log.warning("shard %s: completing interrupted rung %s (%s)", shard,
                                state.pending.id, state.pending.rung)
                    self.rungs.spawn(shard, state.pending)

    def close(self) -> None:
        """Close the audit log. Rungs still running finish on their own threads; one cut
        short by the process ending is completed by the next start (``start``)."""
        self.audit.close()

    def rungs_in_progress(self) -> int:
        return self.rungs.in_progress()

    # -- decisions ---------------------------------------------------------------

    def _context(self, shard: str) -> Context:
        worker: WorkerIdentity | None = None
        try:
            reg = read_registration(self.dir, shard)
            if reg is not None:
                worker = reg.identity
            self._registrations.recovered(shard)
        except CrawlguardError as exc:
            # Without a trustworthy identity nothing may be signalled: act as if none.
            self._registrations.failed(shard, "unusable, so no worker of the shard is "
                                       "signalled (logged once until it is): %s", exc)
        now = self.clock()
        return Context(now=now, mode=self.mode, paused=self.paused, worker=worker,
                       device_var=self.remediation.device_var, drill=self._drill(shard, now))

    def _drill(self, shard: str, now: float) -> ladder.Drill | None:
        """The shard's live fire drill (``crawlguard drill``), if one runs."""
        doc = live_drill(self.dir, shard, now)
        if doc is None:
            return None
        return ladder.Drill(id=doc.id, worker=doc.target, started_at=doc.started_at,
                            keep=doc.keep)

    def _commit(self, shard: str, t: Transition) -> ShardLadder:
        """Write a manual transition (rung, refusal, reset) and start its rung."""
        state = t.state
        if t.changed:
            self.store.save(state)
        self.metrics.shard_state(shard, state.rung, state.pending is not None)
        if t.start is not None:
            self.rungs.start(shard, t.start)
        elif t.decision == "refused":
            rung = state.history[-1].rung if state.history else None
            self.metrics.rungs.labels(shard=shard, rung=rung or rungs.NONE.name,
                                      outcome="refused").inc()
        return state

    def manual_rung(self, shard: str, rung: str, reason: str) -> ShardLadder:
        """A rung forced by hand, through the same path as alerts; RungRefused if not now."""
        with self.store.lock():
            state = self._load_known(shard)
            t = ladder.on_manual(state, rung, reason, self._context(shard))
            self.audit.write("manual_rung", shard=shard, requested=rung, reason=reason,
                             decision=t.decision, note=t.note)
            state = self._commit(shard, t)
        if t.decision == "refused":
            raise RungRefused(t.note)
        return state

    def reset(self, shard: str, reason: str) -> ShardLadder:
        with self.store.lock():
            try:
                state = self._load_known(shard)
            except CorruptStateError as exc:
                state = self._set_aside(shard, exc)
            t = ladder.on_reset(state, reason, self._context(shard))
            self.audit.write("reset", shard=shard, reason=reason, decision=t.decision,
                             note=t.note)
            if t.decision == "refused":
                raise RungRefused(t.note)
            state = self._commit(shard, t)
        return state

    def set_paused(self, paused: bool, reason: str) -> None:
        with self.store.lock():
            self.store.set_paused(paused, self.clock(), reason)
            self.paused = paused
            self.metrics.paused.set(1 if paused else 0)
            self.audit.write("pause" if paused else "resume", reason=reason)

    def shard(self, shard: str) -> ShardLadder:
        return self._load_known(shard)

    def _set_aside(self, shard: str, exc: CorruptStateError) -> ShardLadder:
        """Reset repairs a corrupt ladder: the file is kept beside it for a person, and
        the shard starts from an empty ladder (what reset writes anyway)."""
        path = self.dir.ladder_file(shard)
        aside = path.with_name(f"ladder.json.corrupt-{int(self.clock())}")
        try:
            path.replace(aside)
        except OSError as err:
            raise StateError(f"cannot set {path} aside: {err.strerror or err}") from err
        log.error("shard %s: corrupt ladder moved to %s by reset: %s", shard, aside, exc)
        self.audit.write("repair", shard=shard, moved_to=str(aside), error=str(exc))
        return ShardLadder(shard=shard)

    def _load_known(self, shard: str) -> ShardLadder:
        """The shard's ladder; UnknownShardError (404) for a shard with neither a ladder
        nor a registered worker, so a typo never uses up a rung or shows a made-up row."""
        if not self.dir.knows(ShardName.parse(shard)):
            raise UnknownShardError(shard, self.dir.root)
        return self.store.load(shard)

    def shards(self) -> tuple[list[ShardLadder], dict[str, str]]:
        """Every readable ladder, and why each unreadable one is not (one bad shard
        never hides the others)."""
        states: list[ShardLadder] = []
        unreadable: dict[str, str] = {}
        for s in self.store.shards():
            try:
                states.append(self.store.load(s))
            except StateError as exc:
                unreadable[s] = str(exc)
        return states, unreadable
