"""Stateful alert evaluation with Prometheus' alerting-rule semantics.

``Evaluator.evaluate(snapshot, now)`` runs every rule's condition over one
snapshot and advances each alert the way Prometheus' ``AlertingRule.Eval``
does, so the embedded path sends Alertmanager what Prometheus would:

- a label set that starts matching becomes *pending* with ``active_at = now``
  and turns *firing* (``fired_at = now``) once ``now - active_at >= for``;
  with ``for: 0`` that is the same evaluation;
- a pending alert that stops matching is forgotten; a firing one becomes
  *inactive* (resolved, ``resolved_at = now``) and is kept for 15 minutes so
  its resolution can be delivered;
- a resolved alert that matches again is a new alert (new ``active_at``),
  i.e. a new episode with a new ``startsAt``;
- value and annotations are refreshed at every evaluation.

Time is whatever ``now`` the caller passes (unix seconds): no clock is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from .samples import LabelSet, Snapshot, fingerprint
from .templating import render
from .twin import RULES, History, Rule

PENDING, FIRING, INACTIVE = "pending", "firing", "inactive"
RESOLVED_RETENTION_S = 15 * 60.0  # Prometheus' resolvedRetention


@dataclass(frozen=True)
class Alert:
    """One alert as of the last evaluation (an immutable copy of the state)."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    value: float
    state: str
    active_at: float
    fired_at: float | None = None
    resolved_at: float | None = None
    fingerprint: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        return self.labels["alertname"]

    @property
    def status(self) -> str:
        """Alertmanager's status: ``firing`` or ``resolved`` (pending is not sent)."""
        return "resolved" if self.state == INACTIVE else "firing"

    @property
    def starts_at(self) -> float:
        """What Prometheus sends as ``startsAt``: the time the alert fired."""
        return self.fired_at if self.fired_at is not None else self.active_at


def alert_labels(rule: Rule, series: LabelSet) -> dict[str, str]:
    """Series labels + rule labels (which win) + ``alertname``."""
    labels = dict(series)
    labels.update(rule.labels)
    labels["alertname"] = rule.name
    return labels


class Evaluator:
    """Runs ``rules`` over successive snapshots; keeps per-alert state."""

    def __init__(self, rules: Iterable[Rule] = RULES,
                 resolved_retention_s: float = RESOLVED_RETENTION_S) -> None:
        self.rules = tuple(rules)
        self.resolved_retention_s = resolved_retention_s
        self.history = History()
        # rule name -> fingerprint -> alert
        self._active: dict[str, dict[str, Alert]] = {r.name: {} for r in self.rules}

    def evaluate(self, snapshot: Snapshot, now: float) -> list[Alert]:
        """Evaluate every rule at ``now``; returns every alert still tracked
        (pending, firing, and resolved within the retention)."""
        # Range functions see the current samples too, as in PromQL.
        self.history.observe(snapshot, now)
        for rule in self.rules:
            self._eval_rule(rule, snapshot, now)
        return self.alerts()

    def alerts(self) -> list[Alert]:
        return [a for by_fp in self._active.values() for a in by_fp.values()]

    def _eval_rule(self, rule: Rule, snapshot: Snapshot, now: float) -> None:
        active = self._active[rule.name]
        matched: dict[str, Alert] = {}
        for series, value in rule.condition(snapshot, now, self.history).items():
            labels = alert_labels(rule, series)
            template_labels = dict(series)
            annotations = {k: render(t, template_labels, value)
                           for k, t in rule.annotations.items()}
            fp = fingerprint(labels)
            matched[fp] = Alert(labels=labels, annotations=annotations, value=value,
                                state=PENDING, active_at=now, fingerprint=fp)

        for fp, new in matched.items():
            old = active.get(fp)
            if old is not None and old.state != INACTIVE:
                active[fp] = replace(old, value=new.value, annotations=new.annotations)
            else:
                active[fp] = new

        for fp, a in list(active.items()):
            if fp not in matched:
                if a.state == PENDING or (a.resolved_at is not None
                                          and now - a.resolved_at > self.resolved_retention_s):
                    del active[fp]
                elif a.state != INACTIVE:
                    active[fp] = replace(a, state=INACTIVE, resolved_at=now)
                continue
            if a.state == PENDING and now - a.active_at >= rule.for_s:
                active[fp] = replace(a, state=FIRING, fired_at=now)
