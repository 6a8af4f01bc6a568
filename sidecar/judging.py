"""Judging webhook notifications: alerts in, decisions written, rungs started.

``AlertJudge.judge`` handles one notification: under ``LadderStore.lock()``
it loads each shard the notification names, applies ``ladder.on_alert`` to
each of its alerts in order, and saves each shard that changed, durably; then
it answers. An exact repeat (most of the traffic: Alertmanager's
repeat_interval, HA pairs) changes nothing, so nothing is written for it but
audit lines (flushed, not fsynced: the audit log is for people).

Each alert is judged alone. One the ladder cannot take (``REFUSED``: malformed,
an alert crawlguard does not act on, an unsafe shard label, a shard name that
differs only in case from a shard of the state dir, or a shard the state dir
does not know) is refused alone: an audit line and
``crawlguard_sidecar_alerts_ignored_total{reason}``, and a warning the first time
that alert is refused. An unknown shard (no ladder, no registered worker: a typo,
a stray label, or a flood of made-up names) gets no state at all: no directory,
no ladder, no series named for it.

A rung is started only after the write that records it. A shard whose ladder
could not be read or written fails the notification (the app answers 500, so
Alertmanager sends it again), and a rung whose write failed was never decided.
That failure is logged once per shard until its alerts are recorded again
(``crawlguard.kernel.logs.Outages``), not once per retry.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

from crawlguard.kernel.errors import StateError, UnsafeNameError
from crawlguard.kernel.formats.schema import worker_json
from crawlguard.kernel.logs import Outages, get_logger
from crawlguard.kernel.workers import WorkerIdentity
from crawlguard.sidecar import ladder

from .audit import AuditLog
from .ladder import AlertFacts, Context, Pending
from .metrics import SidecarMetrics
from .rungs import RungRunner
from .state import LadderStore
from .webhook import AlertOutcome, MalformedAlert, WebhookPayload, triage

log = get_logger(__name__)
SUPPRESSED = ("duplicate", "same_episode", "stale", "in_progress")
REFUSED = ("malformed_alert", "unknown_alertname", "unsafe_shard", "unsafe_worker",
           "unknown_shard")
"""Alerts refused one by one (``crawlguard_sidecar_alerts_ignored_total{reason}``)."""
REMEMBERED_REFUSALS = 4096
"""Refused alerts remembered so that Alertmanager's repeats of one are not warned
about again (they are still audited and counted); the oldest are forgotten first."""


class AlertJudge:
    """The alert half of the engine; ``context`` gives the facts a decision needs
    beyond the shard's ladder (clock, mode, pause, registered worker)."""

    def __init__(self, store: LadderStore, rungs: RungRunner, metrics: SidecarMetrics,
                 audit: AuditLog, context: Callable[[str], Context]) -> None:
        self.store = store
        self.rungs = rungs
        self.metrics = metrics
        self.audit = audit
        self.context = context
        self.unrecorded = Outages(log, "shard %s: recording its alerts", logging.ERROR)
        self._refused: OrderedDict[str, None] = OrderedDict()

    def judge(self, payload: WebhookPayload) -> list[AlertOutcome]:
        """Judge one notification; its decisions are durable when this returns.
        StateError when a shard's ladder could not be read or written."""
        outcomes, by_shard = self._triage(payload)
        failed: list[StateError] = []
        with self.store.lock():
            for shard, items in by_shard.items():
                try:
                    self._judge_shard(shard, items, outcomes)
                except StateError as exc:
                    self.unrecorded.failed(shard, "failed (answered 500, so Alertmanager "
                                           "retries; logged once until it works): %s", exc)
                    failed.append(exc)
                else:
                    self.unrecorded.recovered(shard)
        self._warn_refused(outcomes)
        if failed:
            raise failed[0]
        return outcomes

    def _triage(self, payload: WebhookPayload
                ) -> tuple[list[AlertOutcome], dict[str, list[tuple[int, AlertFacts]]]]:
        """Outcomes with the ignored alerts judged, and the others grouped by shard."""
        outcomes: list[AlertOutcome] = []
        by_shard: dict[str, list[tuple[int, AlertFacts]]] = {}
        for alert in payload.alerts:
            tri = triage(alert)
            self.metrics.alert_received(tri.alertname, tri.status)
            if tri.facts is None or tri.shard is None:
                self.metrics.ignored.labels(reason=tri.ignored or "unknown").inc()
                outcomes.append(AlertOutcome(tri.alertname, tri.status, tri.fingerprint, None,
                                             tri.ignored or "ignored", tri.note))
                seen = ({"shard_label": alert.shard} if isinstance(alert, MalformedAlert)
                        else {"labels": alert.labels})
                self.audit.write("alert", alertname=tri.alertname, status=tri.status,
                                 fingerprint=tri.fingerprint, decision=tri.ignored,
                                 note=tri.note, **seen)
                continue
            outcomes.append(AlertOutcome(tri.alertname, tri.status, tri.fingerprint, tri.shard,
                                         "pending"))
            by_shard.setdefault(tri.shard, []).append((len(outcomes) - 1, tri.facts))
        return outcomes, by_shard

    def _judge_shard(self, shard: str, items: list[tuple[int, AlertFacts]],
                     outcomes: list[AlertOutcome]) -> None:
        """Judge the shard's alerts under the lock and save its ladder if they changed it.
        StateError (raised) when it could not be: its rungs were never decided."""
        try:
            known = self.store.dir.knows(shard)
        except UnsafeNameError as exc:  # e.g. "VICTIM" beside a shard "victim"
            for idx, facts in items:
                self._judged(outcomes, idx, None, facts, "unsafe_shard", str(exc), None)
            return
        except StateError as exc:
            for idx, facts in items:
                self._judged(outcomes, idx, shard, facts, "state_error", str(exc), None)
            raise
        if not known:
            note = "no ladder and no registered worker (a typo?): nothing is kept for it"
            for idx, facts in items:
                self._judged(outcomes, idx, shard, facts, "unknown_shard", note, None)
            return
        try:
            state = self.store.load(shard)
        except StateError as exc:
            for idx, facts in items:
                self._judged(outcomes, idx, shard, facts, "state_error", str(exc), None)
            # Not recorded is not acknowledged: the request answers 5xx, Alertmanager retries.
            raise
        ctx = self.context(shard)
        changed = False
        starts: list[Pending] = []
        for idx, facts in items:
            t = ladder.on_alert(state, facts, ctx)
            self._judged(outcomes, idx, shard, facts, t.decision, t.note, ctx.worker)
            state, changed = t.state, changed or t.changed
            if t.start is not None:
                starts.append(t.start)
        if changed:
            self.store.save(state)
        self.metrics.shard_state(shard, state.rung, state.pending is not None)
        for start in starts:
            self.rungs.start(shard, start)

    def _judged(self, outcomes: list[AlertOutcome], idx: int, shard: str | None,
                facts: AlertFacts, decision: str, note: str,
                worker: WorkerIdentity | None) -> None:
        o = outcomes[idx]
        outcomes[idx] = AlertOutcome(o.alertname, o.status, o.fingerprint, shard, decision, note)
        if decision in SUPPRESSED:
            self.metrics.suppressed.labels(reason=decision).inc()
        elif decision in ("rung", "alert_only", "terminal", "refused") and shard is not None:
            self.metrics.crawls.labels(shard=shard).inc()  # a "drill" is no crawl
        elif decision in (*REFUSED, "state_error"):
            self.metrics.ignored.labels(reason=decision).inc()
        self.audit.write("alert", shard=shard, alertname=facts.alertname, status=facts.status,
                         fingerprint=facts.fingerprint, starts_at=facts.starts_at,
                         decision=decision, note=note, worker=worker_json(worker))

    def _warn_refused(self, outcomes: list[AlertOutcome]) -> None:
        """One warning for the alerts of this notification refused for the first time."""
        new: dict[str, list[AlertOutcome]] = {}
        for o in outcomes:
            if o.decision not in REFUSED:
                continue
            key = f"{o.decision}|{o.shard}|{o.status}|{o.fingerprint}"
            if key in self._refused:
                continue
            self._refused[key] = None
            if len(self._refused) > REMEMBERED_REFUSALS:
                self._refused.popitem(last=False)
            new.setdefault(o.decision, []).append(o)
        if not new:
            return
        parts = [f"{len(refused)} {reason}, e.g. "
                 f"{f'shard {refused[0].shard}' if refused[0].shard else 'alert'} "
                 f"{refused[0].fingerprint!r}: {refused[0].note}"
                 for reason, refused in new.items()]
        log.warning("alerts refused one by one, the rest of their notification judged: %s "
                    "(each is in %s; repeats are not logged again)", "; ".join(parts),
                    self.audit.path)
