"""The escalation ladder of one shard as a pure state machine.

No I/O and no clock: every function takes the shard's current ``ShardLadder``
and the facts of one event (an alert, a manual rung, a reset, the outcome of
an action) with the time in ``Context.now``, and returns a ``Transition``: the
new state, the decision taken, and the rung to carry out, if any. The engine
persists the state and performs the action; the rules live only here.

Episode rules for a firing alert, in this order (the first that matches wins):

1. ``duplicate``    the same status, fingerprint and startsAt was seen before
                    (Alertmanager is at-least-once, repeats, and an HA pair
                    sends everything twice);
2. ``resolved``     a resolved notification: recorded, never interrupts a rung;
3. ``in_progress``  a rung is being carried out for the shard: recorded only;
4. ``stale``        it began before the shard's last rung took effect, or before
                    the registered worker was created, or its ``pid`` label
                    names another process than the registered worker: it
                    describes a worker that is already gone;
   ``no_worker``    no worker is registered for the shard: recorded, no rung
                    (nobody could be signalled; a rung would be wasted);
5. ``same_episode`` the shard's open episode is this worker's (``BFMShardCrawl``
                    and ``BFMShardStalled`` of one worker are one episode);
6. a new episode: ``crawls`` + 1 and, by HELIX_BFM_CRAWL_ACTION and the rung
   reached, ``rung`` (restart or cpu), ``terminal`` (already on CPU),
   ``refused`` (paused) or ``alert_only`` (action=off);
   ``drill``       unless it belongs to a live fire drill (``Context.drill``,
                    ``drill_of``: the drilled worker, begun after the drill began,
                    no ``--keep``): then the episode opens and the worker is
                    restarted (source ``drill``), but nothing is counted and the
                    rung and environment stay, so the drill never moves the ladder.

An episode stays open until a rung of the shard takes effect (its worker is
then gone), so with action=off or while paused one worker is one episode.

``BFMShardOOM`` (a worker died of torch's out-of-memory error, the crawl's
twin) climbs the same ladder, with the dead worker's identity (the alert's
``worker`` label, ``AlertFacts.worker``) in place of the registered worker's:
its successor may already be registered, so rule 4's "began before the
registered worker was created" does not apply, the episode is the dead
worker's (its own crawl alert and its OOM are one episode), and a restart
rung targets the dead worker: there is nothing left to kill, the supervisor's
relaunch is the fresh CUDA context. A CPU rung targets the registered worker
unless that is the dead one: a successor launched on the GPU before the
environment changed must be restarted to take it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from crawlguard.kernel import rungs
from crawlguard.kernel.settings import ACTIONS, LADDER, OFF
from crawlguard.kernel.workers import WorkerIdentity

Mode = str
"""HELIX_BFM_CRAWL_ACTION: ``kernel.settings.ACTIONS``."""
AlertStatus = Literal["firing", "resolved"]

KNOWN_ALERTS = frozenset({"BFMShardCrawl", "BFMShardStalled", "BFMShardOOM"})
OOM_ALERT = "BFMShardOOM"
MAX_SEEN = 256
"""Alert keys remembered per shard. Older repeats still meet the stale and
same-episode rules, so forgetting a key never turns a repeat into a rung."""
MAX_HISTORY = 200
"""History entries kept per shard; rung and reset entries are dropped last."""


@dataclass(frozen=True)
class AlertFacts:
    """What the ladder needs of one alert of a webhook payload."""

    alertname: str
    status: AlertStatus
    fingerprint: str
    starts_at: float
    pid: int | None = None
    """The worker the alert describes (its ``pid`` label); None when absent."""
    worker: str | None = None
    """For BFMShardOOM: the dead worker's identity key (``<pid>-<creation ms>``)."""

    @property
    def key(self) -> str:
        # Microsecond text: the same startsAt always gives the same key.
        return f"{self.status}|{self.fingerprint}|{self.starts_at:.6f}"


@dataclass(frozen=True)
class Pending:
    """A rung decided and persisted but not yet carried out to the end."""

    id: str
    rung: str
    """A name of ``kernel.rungs.TAKEN``."""
    decided_at: float
    worker: WorkerIdentity | None
    source: str
    reason: str


@dataclass(frozen=True)
class Episode:
    """The crawl episode a shard is in; closed when a rung takes effect."""

    worker: str | None
    opened_at: float
    alertname: str
    fingerprint: str
    starts_at: float


@dataclass(frozen=True)
class Entry:
    """One history entry; ``None`` fields are left out of the JSON."""

    kind: str
    at: float
    id: str | None = None
    rung: str | None = None
    source: str | None = None
    reason: str | None = None
    alertname: str | None = None
    fingerprint: str | None = None
    starts_at: float | None = None
    worker: WorkerIdentity | None = None
    decided_at: float | None = None
    effective_at: float | None = None
    outcome: str | None = None
    shared_bytes: int | None = None
    """``verified`` entries: the new worker's shared GPU memory (sidecar/verify.py)."""
    rate_ratio: float | None = None
    """``verified`` entries: the new worker's median rate / the shard's baseline."""


@dataclass(frozen=True)
class ShardLadder:
    shard: str
    crawls: int = 0
    rung: str = rungs.NONE.name
    """The highest rung taken, a name of ``kernel.rungs.TABLE``."""
    env: Mapping[str, str] = field(default_factory=dict)
    pending: Pending | None = None
    episode: Episode | None = None
    last_rung_decided_at: float | None = None
    last_rung_effective_at: float | None = None
    seq: int = 0
    seen: tuple[str, ...] = ()
    history: tuple[Entry, ...] = ()


@dataclass(frozen=True)
class Drill:
    """A live fire drill of the shard (``crawlguard drill``, ``kernel.drills``)."""

    id: str
    worker: WorkerIdentity
    """The drilled worker: only its alerts are the drill's."""
    started_at: float
    keep: bool = False
    """``--keep``: its crawl is judged like any other."""


@dataclass(frozen=True)
class Context:
    """Everything outside the shard's state that a decision depends on."""

    now: float
    mode: Mode = LADDER
    paused: bool = False
    worker: WorkerIdentity | None = None
    device_var: str = "BGEM3_DEVICE"
    drill: Drill | None = None


@dataclass(frozen=True)
class Transition:
    state: ShardLadder
    decision: str
    start: Pending | None = None
    note: str = ""

    @property
    def changed(self) -> bool:
        return self.decision != "duplicate"


def _log(state: ShardLadder, *entries: Entry) -> tuple[Entry, ...]:
    history = list(state.history) + list(entries)
    while len(history) > MAX_HISTORY:
        # Drop the oldest routine entry; rungs and resets are the ladder's story.
        idx = next((i for i, e in enumerate(history)
                    if e.kind not in ("rung", "reset", "verified")), 0)
        del history[idx]
    return tuple(history)


def _alert_entry(kind: str, alert: AlertFacts, ctx: Context, reason: str | None = None) -> Entry:
    return Entry(kind=kind, at=ctx.now, alertname=alert.alertname, fingerprint=alert.fingerprint,
                 starts_at=alert.starts_at, worker=ctx.worker, reason=reason)


def mode_of(action: str) -> Mode:
    """HELIX_BFM_CRAWL_ACTION as the ladder's mode (settings already validated it)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown HELIX_BFM_CRAWL_ACTION {action!r}")
    return action


def next_rung(mode: Mode, rung: str) -> rungs.Rung | None:
    """The rung a new crawl episode takes; None when nothing higher is left. A mode
    named for a rung (HELIX_BFM_CRAWL_ACTION=cpu) goes straight to that rung."""
    if mode == OFF:
        return None
    target = rungs.above(rung) if mode == LADDER else rungs.named(mode)
    if target is None or target.level <= rungs.named(rung).level:
        return None
    return target


def _start(state: ShardLadder, rung: rungs.Rung, ctx: Context, source: str,
           reason: str, before: tuple[Entry, ...] = (), climbs: bool = True) -> Transition:
    """Decide ``rung``; ``climbs`` False (a drill's restart) leaves the shard's rung and
    environment as they are: the restart happens, the ladder does not move."""
    seq = state.seq + 1
    pending = Pending(id=f"r{seq}", rung=rung.name, decided_at=ctx.now, worker=ctx.worker,
                      source=source, reason=reason)
    entry = Entry(kind="rung", at=ctx.now, id=pending.id, rung=rung.name, source=source,
                  reason=reason, worker=ctx.worker, decided_at=ctx.now)
    new = replace(state, pending=pending, seq=seq, last_rung_decided_at=ctx.now,
                  history=_log(state, *before, entry))
    if climbs:
        new = replace(new, rung=rungs.highest(rung.name, state.rung),
                      env={**state.env, **rung.effect.env(ctx.device_var)})
    return Transition(new, "rung" if climbs else "drill", start=pending,
                      note=f"{rung.name} decided ({reason})")


def repeat(state: ShardLadder, alert: AlertFacts) -> Transition | None:
    """Rule 1, which needs no context: the transition of an exact repeat, else None."""
    if alert.key in state.seen:
        return Transition(state, "duplicate", note="exact repeat (fingerprint+startsAt)")
    return None


def on_alert(state: ShardLadder, alert: AlertFacts, ctx: Context) -> Transition:
    """Apply one alert of a known name for this shard (rules in the module docstring)."""
    same = repeat(state, alert)
    if same is not None:
        return same
    state = replace(state, seen=(*state.seen, alert.key)[-MAX_SEEN:])
    dead = WorkerIdentity.from_key(alert.worker) if alert.worker else None
    wkey = ctx.worker.key if ctx.worker else None
    if dead is not None:
        wkey = dead.key
    last_effect = state.last_rung_effective_at
    suppressed: tuple[str, str] | None = None
    if alert.status == "resolved":
        suppressed = ("resolved", "resolved notification: recorded, no action")
    elif state.pending is not None:
        suppressed = ("in_progress", f"rung {state.pending.id} is in progress")
    elif last_effect is not None and alert.starts_at < last_effect:
        suppressed = ("stale", "began before the last rung took effect")
    elif (dead is None and ctx.worker is not None
          and alert.starts_at < ctx.worker.create_time):
        suppressed = ("stale", "began before the registered worker was created")
    elif ctx.worker is None:
        # Nobody to signal: a rung would be used up for nothing (a shard whose worker
        # never registered again, or a registration the sidecar cannot read; a shard
        # with neither ladder nor worker is refused before the ladder, as unknown).
        suppressed = ("no_worker", "no registered worker for the shard: recorded, no rung")
    elif ctx.worker is not None and alert.pid is not None and alert.pid != ctx.worker.pid:
        suppressed = ("stale", f"describes pid {alert.pid}, not the registered worker "
                               f"{ctx.worker.pid}")
    elif state.episode is not None and state.episode.worker == wkey:
        suppressed = ("same_episode", "the open episode is this worker's")
    if suppressed is not None:
        kind, note = suppressed
        return Transition(replace(state, history=_log(state, _alert_entry(kind, alert, ctx, note))),
                          kind, note=note)
    episode = Episode(worker=wkey, opened_at=ctx.now, alertname=alert.alertname,
                      fingerprint=alert.fingerprint, starts_at=alert.starts_at)
    drill = drill_of(alert, ctx) if dead is None else None
    if drill is not None and not drill.keep:
        return _drill(replace(state, episode=episode), alert, ctx, drill)
    state = replace(state, crawls=state.crawls + 1, episode=episode)
    target = next_rung(ctx.mode, state.rung)
    crawl = _alert_entry("crawl", alert, ctx)
    if dead is not None:
        crawl = replace(crawl, worker=dead)
    if drill is not None:
        crawl = replace(crawl, reason=f"drill {drill.id} (--keep): counted")
    if ctx.mode == OFF:
        note = "HELIX_BFM_CRAWL_ACTION=off: alert only"
        return Transition(replace(state, history=_log(state, replace(crawl, reason=note))),
                          "alert_only", note=note)
    if target is None:
        note = f"already on {state.rung}: the terminal rung"
        return Transition(replace(state, history=_log(state, replace(crawl, reason=note))),
                          "terminal", note=note)
    if ctx.paused:
        refusal = Entry(kind="refused", at=ctx.now, rung=target.name, source="alert",
                        reason="paused", worker=ctx.worker)
        return Transition(replace(state, history=_log(state, crawl, refusal)), "refused",
                          note=f"paused: {target.name} not taken")
    if dead is not None:
        # A rung that changes the environment must reach a successor launched before it did.
        successor = ctx.worker is not None and not ctx.worker.same_as(dead)
        changes_env = bool(target.effect.env(ctx.device_var))
        ctx = replace(ctx, worker=ctx.worker if changes_env and successor else dead)
    return _start(state, target, ctx, "alert", f"{alert.alertname} crawl #{state.crawls}",
                  before=(crawl,))


def drill_of(alert: AlertFacts, ctx: Context) -> Drill | None:
    """The live drill this alert belongs to: about the drilled worker (the registered
    one, and the pid of the alert's label when it has one), begun after the drill."""
    drill, worker = ctx.drill, ctx.worker
    if drill is None or worker is None or not drill.worker.same_as(worker):
        return None
    if alert.pid is not None and alert.pid != drill.worker.pid:
        return None
    return drill if alert.starts_at >= drill.started_at else None


def _drill(state: ShardLadder, alert: AlertFacts, ctx: Context, drill: Drill) -> Transition:
    """A crawl of the drill (decision ``drill``): the episode opens, so that the worker's
    other alerts are one with it; the worker is restarted for real, but no crawl is
    counted and the rung and environment stay as they are, so no CPU rung follows."""
    note = f"drill {drill.id}: not counted as a crawl"
    entry = _alert_entry("drill", alert, ctx, note)
    why = ("HELIX_BFM_CRAWL_ACTION=off: alert only" if ctx.mode == OFF
           else "paused: restart not taken" if ctx.paused else None)
    if why is not None:
        note = f"{note}; {why}"
        return Transition(replace(state, history=_log(state, replace(entry, reason=note))),
                          "drill", note=note)
    return _start(state, rungs.RESTART, ctx, "drill", f"drill {drill.id}: {alert.alertname}",
                  before=(entry,), climbs=False)


def refusal(state: ShardLadder, ctx: Context, what: str) -> str | None:
    """Why a manual rung or reset may not happen now; None when it may."""
    if state.pending is not None:
        return (f"rung {state.pending.id} ({state.pending.rung}) is in progress for shard "
                f"{state.shard!r}; try again when it has completed")
    if what == "reset":
        return None
    if ctx.mode == OFF:
        return "HELIX_BFM_CRAWL_ACTION=off: the sidecar takes no rungs"
    if ctx.paused:
        return "the sidecar is paused: POST /v1/resume first"
    return None


def on_manual(state: ShardLadder, rung: str, reason: str, ctx: Context) -> Transition:
    """A rung forced by hand (a name of ``kernel.rungs.MANUAL``); ``next`` climbs one rung
    (and repeats the top one at the top)."""
    why = refusal(state, ctx, "rung")
    if why is not None:
        entry = Entry(kind="refused", at=ctx.now, rung=rung, source="manual", reason=why)
        return Transition(replace(state, history=_log(state, entry)), "refused", note=why)
    target = (rungs.above(state.rung) or rungs.TOP) if rung == rungs.NEXT else rungs.named(rung)
    return _start(state, target, ctx, "manual", reason or "manual")


def on_reset(state: ShardLadder, reason: str, ctx: Context) -> Transition:
    """Forget the ladder: back to GPU. Dedup memory and rung times are kept, so
    alerts about workers already replaced stay stale after a reset."""
    why = refusal(state, ctx, "reset")
    if why is not None:
        return Transition(state, "refused", note=why)
    entry = Entry(kind="reset", at=ctx.now, source="manual", reason=reason or "reset")
    new = replace(state, crawls=0, rung=rungs.NONE.name, env={}, episode=None,
                  history=_log(state, entry))
    return Transition(new, "reset", note="ladder forgotten")


def on_verified(state: ShardLadder, entry: Entry) -> ShardLadder:
    """Record a rung's verification (sidecar/verify.py). A record, not a decision:
    crawls, rung and episode stay as they are, so a fresh context that spills
    again is still the next crawl and takes the next rung."""
    return replace(state, history=_log(state, entry))


def on_complete(state: ShardLadder, rung_id: str, outcome: str, effective_at: float) -> Transition:
    """A rung has been carried out: record its outcome and when it took effect."""
    history = tuple(
        replace(e, outcome=outcome, effective_at=effective_at)
        if e.kind == "rung" and e.id == rung_id else e
        for e in state.history)
    last = state.last_rung_effective_at
    effective = effective_at if last is None else max(last, effective_at)
    if state.pending is None or state.pending.id != rung_id:
        # Still worth knowing: the worker it acted on is gone from this time on.
        return Transition(replace(state, history=history, last_rung_effective_at=effective),
                          "completed_late", note=f"{rung_id} was no longer pending")
    # The worker the episode described is gone now: the next crawl is a new episode.
    new = replace(state, pending=None, episode=None, last_rung_effective_at=effective,
                  history=history)
    return Transition(new, "completed", note=f"{rung_id}: {outcome}")
