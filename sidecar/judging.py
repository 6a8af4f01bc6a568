"""Judging webhook notifications: the alert half of ``sidecar.engine.Engine``.

Three speeds, all with the same answers:

- ``only_repeats`` on the event loop: a payload whose every alert is an exact
  repeat already judged (or is ignored) is answered from memory, without the
  engine thread, the state-dir lock or any I/O: that is most of the traffic
  (Alertmanager's repeat_interval, HA pairs);
- ``handle_batch`` on the engine thread, for everything else, with all the
  notifications that queued meanwhile (``sidecar.batching``): one state-dir
  lock, rules applied in arrival order in memory, each touched shard written
  once and the writes overlapping, rungs started only after their write;
- ``handle_alerts``: the same for one notification on the caller's thread.
"""

from __future__ import annotations

import logging
import threading

from crawlguard.errors import StateError
from crawlguard.workers import WorkerIdentity

from . import ladder
from .audit import AuditLog, worker_json
from .batching import Batcher
from .ladder import AlertFacts, Context, Pending, ShardLadder
from .metrics import SidecarMetrics
from .state import LadderStore
from .webhook import Alert, AlertOutcome, Triage, WebhookPayload, triage

log = logging.getLogger(__name__)
SUPPRESSED = ("duplicate", "same_episode", "stale", "in_progress")
REPEAT = "exact repeat (fingerprint+startsAt)"


class AlertJudging:
    """Mixed into ``Engine``, which provides the attributes and hooks declared here."""

    store: LadderStore
    metrics: SidecarMetrics
    audit: AuditLog
    _mutex: threading.Lock
    _batcher: Batcher[WebhookPayload, list[AlertOutcome]]

    def _context(self, shard: str) -> Context:
        raise NotImplementedError

    def _effective_now(self, start: Pending, state: ShardLadder) -> ShardLadder:
        raise NotImplementedError

    def _started(self, shard: str, start: Pending) -> None:
        raise NotImplementedError

    def only_repeats(self, payload: WebhookPayload) -> list[AlertOutcome] | None:
        """Judge the payload at once, on the caller's thread, when every alert in it is an
        exact repeat or ignored (most of the traffic: repeat_interval, HA pairs); None
        when anything in it needs the engine thread and the state-dir lock."""
        triaged = [(alert, triage(alert)) for alert in payload.alerts]
        if any(t.facts is not None and t.shard is not None
               and not self.store.seen_before(t.shard, t.facts.key) for _, t in triaged):
            return None
        # No mutex: nothing is written, and the event loop must never wait for an fsync.
        outcomes, by_shard = self._triaged(triaged)
        for shard, items in by_shard.items():
            for idx, facts in items:
                self._judged(outcomes, idx, shard, facts, "duplicate", REPEAT, None)
        return outcomes

    def _triaged(self, triaged: list[tuple[Alert, Triage]]
                 ) -> tuple[list[AlertOutcome], dict[str, list[tuple[int, AlertFacts]]]]:
        """Outcomes with the ignored alerts judged, and the rest grouped by shard."""
        outcomes: list[AlertOutcome] = []
        by_shard: dict[str, list[tuple[int, AlertFacts]]] = {}
        for alert, tri in triaged:
            self.metrics.alert_received(tri.alertname, tri.status)
            if tri.facts is None or tri.shard is None:
                self.metrics.ignored.labels(reason=tri.ignored or "unknown").inc()
                outcomes.append(AlertOutcome(tri.alertname, tri.status, tri.fingerprint, None,
                                             tri.ignored or "ignored", tri.note))
                self.audit.write("alert", alertname=tri.alertname, status=tri.status,
                                 fingerprint=tri.fingerprint, decision=tri.ignored,
                                 note=tri.note, labels=alert.labels)
                continue
            outcomes.append(AlertOutcome(tri.alertname, tri.status, tri.fingerprint, tri.shard,
                                         "pending"))
            by_shard.setdefault(tri.shard, []).append((len(outcomes) - 1, tri.facts))
        return outcomes, by_shard

    async def judge(self, payload: WebhookPayload) -> list[AlertOutcome]:
        """Judge a notification from the event loop: exact repeats at once, the rest on
        the engine thread together with whatever else queued meanwhile (group commit)."""
        outcomes = self.only_repeats(payload)
        if outcomes is None:
            outcomes = await self._batcher.submit(payload)
        return outcomes

    def handle_alerts(self, payload: WebhookPayload) -> list[AlertOutcome]:
        """Judge one notification on the caller's thread; persists before returning."""
        result = self.handle_batch([payload])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def handle_batch(self, payloads: list[WebhookPayload]
                     ) -> list[list[AlertOutcome] | BaseException]:
        """Judge notifications in arrival order under one lock, each touched shard written
        once (rungs before they start); a payload whose shard could not be written gets
        the error instead of its outcomes, so it is not acknowledged."""
        work = [self._triaged([(a, triage(a)) for a in p.alerts]) for p in payloads]
        fresh: list[dict[str, list[tuple[int, AlertFacts]]]] = []
        with self._mutex:
            for outcomes, by_shard in work:
                mine: dict[str, list[tuple[int, AlertFacts]]] = {}
                for shard, items in by_shard.items():
                    for idx, facts in items:
                        if self.store.seen_before(shard, facts.key):
                            self._judged(outcomes, idx, shard, facts, "duplicate", REPEAT,
                                         None)
                        else:
                            mine.setdefault(shard, []).append((idx, facts))
                fresh.append(mine)
            failed: dict[str, StateError] = {}
            if any(fresh):
                with self.store.lock():
                    failed = self._judge_fresh([o for o, _ in work], fresh)
        results: list[list[AlertOutcome] | BaseException] = []
        for (outcomes, _), mine in zip(work, fresh, strict=True):
            broken = [failed[s] for s in mine if s in failed]
            results.append(broken[0] if broken else outcomes)
        return results

    def _judge_fresh(self, outcomes: list[list[AlertOutcome]],
                     fresh: list[dict[str, list[tuple[int, AlertFacts]]]]
                     ) -> dict[str, StateError]:
        states: dict[str, ShardLadder] = {}
        contexts: dict[str, Context] = {}
        unreadable: dict[str, StateError] = {}
        must_save: set[str] = set()
        staged: set[str] = set()
        starts: list[tuple[str, Pending]] = []
        for outs, mine in zip(outcomes, fresh, strict=True):
            for shard, items in mine.items():
                if shard not in states and shard not in unreadable:
                    try:
                        states[shard] = self.store.load(shard)
                        contexts[shard] = self._context(shard)
                    except StateError as exc:
                        log.error("shard %s: alerts not judged: %s", shard, exc)
                        unreadable[shard] = exc
                if shard in unreadable:
                    for idx, facts in items:
                        self._judged(outs, idx, shard, facts, "state_error",
                                     str(unreadable[shard]), None)
                    continue
                state, ctx = states[shard], contexts[shard]
                for idx, facts in items:
                    t = ladder.on_alert(state, facts, ctx)
                    self._judged(outs, idx, shard, facts, t.decision, t.note, ctx.worker)
                    state = t.state
                    if t.start is not None:
                        state = self._effective_now(t.start, state)
                        starts.append((shard, t.start))
                    # Suppressed and resolved alerts change nothing that matters if lost:
                    # a repeat after a crash is judged the same way again. They stay in
                    # memory until the shard's next real change (the audit has them now).
                    if t.decision not in (*SUPPRESSED, "resolved"):
                        must_save.add(shard)
                    elif t.changed:
                        staged.add(shard)
                states[shard] = state
        failed = self.store.save_many([states[s] for s in sorted(must_save)])
        # Not recorded is not acknowledged: the request answers 5xx, Alertmanager retries.
        failed.update(unreadable)
        for shard in staged - must_save:
            self.store.stage(states[shard])
        for shard, state in states.items():
            if shard not in failed:
                self.metrics.shard_state(shard, state.rung, state.pending is not None)
        for shard, start in starts:
            if shard not in failed:  # a rung whose write failed was never decided
                self._started(shard, start)
        return failed

    def _judged(self, outcomes: list[AlertOutcome], idx: int, shard: str, facts: AlertFacts,
                decision: str, note: str, worker: WorkerIdentity | None) -> None:
        o = outcomes[idx]
        outcomes[idx] = AlertOutcome(o.alertname, o.status, o.fingerprint, shard, decision, note)
        if decision in SUPPRESSED:
            self.metrics.suppressed.labels(reason=decision).inc()
        elif decision in ("rung", "alert_only", "terminal", "refused"):
            self.metrics.crawls.labels(shard=shard).inc()
        elif decision == "state_error":
            self.metrics.ignored.labels(reason="state_error").inc()
        self.audit.write("alert", shard=shard, alertname=facts.alertname, status=facts.status,
                         fingerprint=facts.fingerprint, starts_at=facts.starts_at,
                         decision=decision, note=note, worker=worker_json(worker))
