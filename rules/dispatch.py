"""When to notify: grouping, repeats and retries, Alertmanager-style.

Alerts are grouped by ``group_by`` (``shard`` and ``pid``, as the shipped
Alertmanager route does): BFMShardCrawl and BFMShardStalled of one worker are
one notification, and a relaunched worker's crawl is a new group, sent at once.
A group is *due* when (Alertmanager's ``needsUpdate``):

- it was never notified and has a firing alert;
- a firing alert is not in the last notification. Unlike Alertmanager, an
  alert is identified by fingerprint AND startsAt, so a new episode of the
  same worker (after a rung, same labels) is sent at once, not at the repeat;
- nothing fires any more but the last notification had firing alerts (the
  "all resolved" notification), or a resolution was not yet sent;
- it still fires, unchanged, and ``repeat_interval_s`` has passed since the
  last successful notification (the sidecar dedups repeats into one episode).

A failed delivery changes nothing of the above, so the group stays due; it is
retried after a backoff that doubles from ``retry_initial_s`` up to
``retry_max_s`` and never gives up while the group has something to say.
Resolved alerts leave the group once a notification carrying them succeeded;
an empty group is forgotten. Time is the caller's ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from .evaluator import FIRING, INACTIVE, Alert
from .samples import LabelSet

AlertKey = tuple[str, float]  # (fingerprint, startsAt)

REPEAT_INTERVAL_S = 120.0
"""As ``repeat_interval`` of the sidecar route in deploy/alertmanager/alertmanager.yml:
the retry for a notification the sidecar acknowledged but lost (deploy/README.md)."""


GROUP_BY = ("shard", "pid")
"""As ``group_by`` of the sidecar route in deploy/alertmanager/alertmanager.yml."""


def _key(a: Alert) -> AlertKey:
    return (a.fingerprint, a.starts_at)


@dataclass(frozen=True)
class Notification:
    """One due notification: the group's labels and every alert of the group."""

    group: LabelSet
    alerts: tuple[Alert, ...]

    @property
    def group_labels(self) -> dict[str, str]:
        return dict(self.group)


@dataclass
class _Group:
    alerts: dict[str, Alert] = field(default_factory=dict)
    sent_firing: set[AlertKey] | None = None  # None: never notified
    sent_resolved: set[AlertKey] = field(default_factory=set)
    sent_at: float = 0.0
    failures: int = 0
    retry_at: float = 0.0


class Dispatcher:
    def __init__(self, group_by: tuple[str, ...] = GROUP_BY,
                 repeat_interval_s: float = REPEAT_INTERVAL_S,
                 retry_initial_s: float = 1.0, retry_max_s: float = 60.0) -> None:
        self.group_by = group_by
        self.repeat_interval_s = repeat_interval_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._groups: dict[LabelSet, _Group] = {}

    def _group_of(self, a: Alert) -> LabelSet:
        return tuple(sorted((n, a.labels[n]) for n in self.group_by if a.labels.get(n)))

    def update(self, alerts: Iterable[Alert], now: float) -> None:
        """Take the evaluator's current alerts (pending ones are ignored)."""
        current = {a.fingerprint: a for a in alerts if a.state in (FIRING, INACTIVE)}
        for a in current.values():
            if a.state == FIRING:
                self._groups.setdefault(self._group_of(a), _Group()).alerts[a.fingerprint] = a
        for gkey, g in list(self._groups.items()):
            for fp, held in list(g.alerts.items()):
                cur = current.get(fp)
                if cur is not None and (cur.state == FIRING or _key(cur) == _key(held)):
                    g.alerts[fp] = cur
                elif held.state == FIRING:
                    # Gone from the evaluator (or replaced by a newer episode
                    # held elsewhere): it ended now as far as we know.
                    g.alerts[fp] = replace(held, state=INACTIVE, resolved_at=now)
            if g.sent_firing is None and not any(a.state == FIRING for a in g.alerts.values()):
                # Fired and resolved before anyone was told: nothing to say.
                del self._groups[gkey]

    def _needs_update(self, g: _Group, now: float) -> bool:
        firing = {_key(a) for a in g.alerts.values() if a.state == FIRING}
        resolved = {_key(a) for a in g.alerts.values() if a.state == INACTIVE}
        if g.sent_firing is None:
            return bool(firing)
        if not firing <= g.sent_firing:
            return True
        if not firing:
            return bool(g.sent_firing) or not resolved <= g.sent_resolved
        if not resolved <= g.sent_resolved:
            return True
        return now - g.sent_at >= self.repeat_interval_s

    def due(self, now: float) -> list[Notification]:
        out = []
        for gkey, g in sorted(self._groups.items()):
            if g.failures and now < g.retry_at:
                continue
            if self._needs_update(g, now):
                out.append(Notification(gkey, tuple(g.alerts.values())))
        return out

    def delivered(self, n: Notification, now: float) -> None:
        g = self._groups.get(n.group)
        if g is None:
            return
        g.sent_firing = {_key(a) for a in n.alerts if a.state == FIRING}
        g.sent_resolved = {_key(a) for a in n.alerts if a.state == INACTIVE}
        g.sent_at, g.failures, g.retry_at = now, 0, 0.0
        for a in n.alerts:
            held = g.alerts.get(a.fingerprint)
            if a.state == INACTIVE and held is not None and _key(held) == _key(a):
                del g.alerts[a.fingerprint]
        if not g.alerts:
            del self._groups[n.group]

    def failed(self, n: Notification, now: float, *, permanent: bool = False) -> float:
        """Record a failed delivery; returns the seconds until the next try.
        ``permanent`` (the receiver refused it, e.g. a bad token) backs off the
        maximum at once."""
        g = self._groups.get(n.group)
        if g is None:
            return 0.0
        g.failures += 1
        delay = self.retry_max_s if permanent else min(
            self.retry_max_s, self.retry_initial_s * 2.0 ** min(g.failures - 1, 30))
        g.retry_at = now + delay
        return delay
