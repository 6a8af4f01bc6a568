"""The ladder as a pure state machine: every episode rule, with an injected clock."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from crawlguard.kernel import rungs
from crawlguard.kernel.workers import WorkerIdentity
from crawlguard.sidecar import ladder
from crawlguard.sidecar.ladder import AlertFacts, Context, ShardLadder

W1 = WorkerIdentity(pid=100, create_time=1000.0)
W2 = WorkerIdentity(pid=200, create_time=2000.0)


def crawl(starts: float, fp: str = "aaaa", name: str = "BFMShardCrawl",
          status: str = "firing") -> AlertFacts:
    return AlertFacts(alertname=name, status=status, fingerprint=fp,  # type: ignore[arg-type]
                      starts_at=starts)


def ctx(now: float, worker: WorkerIdentity | None = W1, **kw: object) -> Context:
    return Context(now=now, worker=worker, **kw)  # type: ignore[arg-type]


def climb(state: ShardLadder, alert: AlertFacts, c: Context, effective: float) -> ShardLadder:
    t = ladder.on_alert(state, alert, c)
    assert t.decision == "rung" and t.start is not None
    return ladder.on_complete(t.state, t.start.id, "signalled", effective).state


def test_first_crawl_decides_restart_on_the_registered_worker() -> None:
    t = ladder.on_alert(ShardLadder("s"), crawl(1100), ctx(1200))
    assert t.decision == "rung"
    assert t.start is not None and t.start.rung == "restart" and t.start.worker == W1
    assert t.state.rung == "restart" and t.state.crawls == 1 and t.state.env == {}
    assert t.state.pending == t.start and t.state.last_rung_decided_at == 1200
    assert [e.kind for e in t.state.history] == ["crawl", "rung"]


def test_exact_repeat_is_a_duplicate_and_changes_nothing() -> None:
    first = ladder.on_alert(ShardLadder("s"), crawl(1100), ctx(1200)).state
    for now in (1201, 1300, 5000):
        t = ladder.on_alert(first, crawl(1100), ctx(now))
        assert t.decision == "duplicate" and t.state is first and not t.changed


def test_alerts_while_a_rung_is_in_progress_are_recorded_only() -> None:
    s = ladder.on_alert(ShardLadder("s"), crawl(1100), ctx(1200)).state
    t = ladder.on_alert(s, crawl(1150, fp="bbbb", name="BFMShardStalled"), ctx(1201))
    assert t.decision == "in_progress" and t.start is None
    assert t.state.crawls == 1 and t.state.pending == s.pending
    assert t.state.history[-1].kind == "in_progress"


def test_completion_records_effect_and_closes_the_episode() -> None:
    t = ladder.on_alert(ShardLadder("s"), crawl(1100), ctx(1200))
    assert t.start is not None
    done = ladder.on_complete(t.state, t.start.id, "signalled", 1205.5)
    assert done.decision == "completed"
    s = done.state
    assert s.pending is None and s.episode is None and s.last_rung_effective_at == 1205.5
    rung = next(e for e in s.history if e.kind == "rung")
    assert (rung.outcome, rung.decided_at, rung.effective_at) == ("signalled", 1200, 1205.5)


def test_alert_that_began_before_the_rung_took_effect_is_stale() -> None:
    s = climb(ShardLadder("s"), crawl(1100), ctx(1200), effective=1210)
    # BFMShardStalled of the replaced worker, delivered late: same episode, no rung.
    t = ladder.on_alert(s, crawl(1205, fp="bbbb", name="BFMShardStalled"), ctx(1300, W2))
    assert t.decision == "stale" and t.state.crawls == 1 and t.state.rung == "restart"


def test_alert_older_than_the_registered_worker_is_stale() -> None:
    t = ladder.on_alert(ShardLadder("s"), crawl(1500), ctx(2100, W2))
    assert t.decision == "stale" and t.state.crawls == 0


def test_alert_naming_another_pid_than_the_registered_worker_is_stale() -> None:
    # Began after W2 was created (clock skew, or a late delivery) but its pid label
    # says it is W1's: signalling W2 for it would hit the wrong worker.
    late = replace(crawl(2050, fp="eeee"), pid=W1.pid)
    t = ladder.on_alert(ShardLadder("s"), late, ctx(2100, W2))
    assert t.decision == "stale" and t.state.crawls == 0 and t.start is None
    assert "pid 100" in t.note


def test_relaunched_workers_crawl_is_a_new_episode_and_its_pair_one() -> None:
    s = climb(ShardLadder("s"), replace(crawl(1100), pid=W1.pid), ctx(1200), effective=1210)
    # W2's crawl: new pid, so a new fingerprint and (in Alertmanager) a new group.
    t = ladder.on_alert(s, replace(crawl(2050, fp="ffff"), pid=W2.pid), ctx(2100, W2))
    assert t.decision == "rung" and t.state.crawls == 2 and t.start is not None
    s = ladder.on_complete(t.state, t.start.id, "signalled", 2110).state
    # Its Stalled twin (same worker, same pid) arriving after the rung is stale.
    twin = replace(crawl(2060, fp="0f0f", name="BFMShardStalled"), pid=W2.pid)
    assert ladder.on_alert(s, twin, ctx(2120, W2)).decision == "stale"


def test_crawl_and_stalled_of_one_worker_are_one_episode_when_no_rung_is_taken() -> None:
    s = ladder.on_alert(ShardLadder("s"), crawl(1100), ctx(1200, mode="off")).state
    t = ladder.on_alert(s, crawl(1150, fp="bbbb", name="BFMShardStalled"), ctx(1250, mode="off"))
    assert t.decision == "same_episode" and t.state.crawls == 1


def test_second_episode_demotes_to_cpu_and_third_is_terminal() -> None:
    s = climb(ShardLadder("s"), crawl(1100), ctx(1200), effective=1210)
    t = ladder.on_alert(s, crawl(2050, fp="cccc"), ctx(2100, W2, device_var="MY_DEVICE"))
    assert t.decision == "rung" and t.start is not None and t.start.rung == "cpu"
    assert t.state.env == {"MY_DEVICE": "cpu"} and t.state.rung == "cpu"
    assert t.state.crawls == 2 and t.start.worker == W2
    s = ladder.on_complete(t.state, t.start.id, "killed", 2110).state
    w3 = WorkerIdentity(300, 3000.0)
    t = ladder.on_alert(s, crawl(3050, fp="dddd"), ctx(3100, w3, device_var="MY_DEVICE"))
    assert t.decision == "terminal" and t.start is None
    assert t.state.crawls == 3 and t.state.rung == "cpu"


def test_action_cpu_goes_straight_to_cpu() -> None:
    t = ladder.on_alert(ShardLadder("s"), crawl(1100), ctx(1200, mode="cpu"))
    assert t.start is not None and t.start.rung == "cpu" and t.state.env == {"BGEM3_DEVICE": "cpu"}
    s = ladder.on_complete(t.state, t.start.id, "signalled", 1210).state
    t = ladder.on_alert(s, crawl(2050, fp="b"), ctx(2100, W2, mode="cpu"))
    assert t.decision == "terminal" and t.state.crawls == 2


def test_action_off_counts_crawls_but_never_climbs() -> None:
    s = ShardLadder("s")
    for i, (w, starts) in enumerate([(W1, 1100.0), (W2, 2100.0)], start=1):
        t = ladder.on_alert(s, crawl(starts, fp=f"f{i}"), ctx(starts + 50, w, mode="off"))
        assert t.decision == "alert_only" and t.start is None
        s = t.state
        assert s.crawls == i and s.rung == "none" and s.env == {}
    assert ladder.on_manual(s, "restart", "", ctx(3000, mode="off")).decision == "refused"


def test_paused_records_the_crawl_but_takes_no_rung() -> None:
    t = ladder.on_alert(ShardLadder("s"), crawl(1100), ctx(1200, paused=True))
    assert t.decision == "refused" and t.start is None
    assert t.state.crawls == 1 and t.state.rung == "none"
    assert t.state.history[-1].kind == "refused" and t.state.history[-1].rung == "restart"
    # Resumed: the next worker's crawl is the first rung taken.
    t = ladder.on_alert(t.state, crawl(2050, fp="b"), ctx(2100, W2))
    assert t.start is not None and t.start.rung == "restart" and t.state.crawls == 2


def test_resolved_never_interrupts_a_rung() -> None:
    s = ladder.on_alert(ShardLadder("s"), crawl(1100), ctx(1200)).state
    t = ladder.on_alert(s, crawl(1100, status="resolved"), ctx(1201))
    assert t.decision == "resolved" and t.state.pending == s.pending and t.state.crawls == 1
    assert ladder.on_alert(t.state, crawl(1100, status="resolved"), ctx(1202)).decision \
        == "duplicate"


def test_manual_rungs_and_next() -> None:
    s = ShardLadder("s")
    t = ladder.on_manual(s, "next", "by hand", ctx(1200))
    assert t.start is not None and t.start.rung == "restart" and t.start.source == "manual"
    assert t.state.crawls == 0 and t.state.history[-1].reason == "by hand"
    busy = ladder.on_manual(t.state, "cpu", "", ctx(1201))
    assert busy.decision == "refused" and "in progress" in busy.note
    s = ladder.on_complete(t.state, t.start.id, "no_worker", 1200).state
    t = ladder.on_manual(s, "next", "", ctx(1300))
    assert t.start is not None and t.start.rung == "cpu" and t.state.env == {"BGEM3_DEVICE": "cpu"}
    s = ladder.on_complete(t.state, t.start.id, "signalled", 1301).state
    t = ladder.on_manual(s, "next", "", ctx(1400))
    assert t.start is not None and t.start.rung == "cpu"
    s = ladder.on_complete(t.state, t.start.id, "signalled", 1401).state
    t = ladder.on_manual(s, "restart", "", ctx(1500))
    assert t.start is not None and t.start.rung == "restart" and t.state.rung == "cpu"
    assert ladder.on_manual(s, "restart", "", ctx(1500, paused=True)).decision == "refused"


def test_reset_forgets_the_ladder_but_not_what_was_replaced() -> None:
    s = climb(ShardLadder("s"), crawl(1100), ctx(1200), effective=1210)
    s = climb(s, crawl(2050, fp="b"), ctx(2100, W2), effective=2110)
    t = ladder.on_reset(s, "new driver", ctx(2200, W2))
    assert t.decision == "reset"
    r = t.state
    assert (r.crawls, r.rung, dict(r.env), r.pending) == (0, "none", {}, None)
    assert r.history[-1].kind == "reset" and r.history[-1].reason == "new driver"
    assert r.last_rung_effective_at == 2110 and r.seen == s.seen
    # The replaced worker's late alert stays stale; a fresh crawl restarts from the bottom.
    assert ladder.on_alert(r, crawl(2000, fp="z"), ctx(2300, W2)).decision == "stale"
    t = ladder.on_alert(r, crawl(2250, fp="y"), ctx(2300, W2))
    assert t.start is not None and t.start.rung == "restart"
    assert ladder.on_reset(t.state, "", ctx(2301)).decision == "refused"


def test_completion_of_a_rung_no_longer_pending_is_recorded_late() -> None:
    t = ladder.on_alert(ShardLadder("s"), crawl(1100), ctx(1200))
    assert t.start is not None
    late = ladder.on_complete(replace(t.state, pending=None), t.start.id, "killed", 1300)
    assert late.decision == "completed_late" and late.state.last_rung_effective_at == 1300


def test_memory_is_bounded_and_keeps_rungs() -> None:
    s = ShardLadder("s")
    t = ladder.on_alert(s, crawl(1100, fp="first"), ctx(1200))
    assert t.start is not None
    s = ladder.on_complete(t.state, t.start.id, "signalled", 1201).state
    for i in range(ladder.MAX_SEEN + ladder.MAX_HISTORY):
        s = ladder.on_alert(s, crawl(1000 + i * 1e-3, fp=f"x{i}"), ctx(1300)).state
    assert len(s.seen) == ladder.MAX_SEEN and len(s.history) == ladder.MAX_HISTORY
    assert any(e.kind == "rung" for e in s.history)


events = st.lists(st.tuples(
    st.sampled_from(["alert", "alert", "alert", "complete", "manual", "reset", "newworker"]),
    st.sampled_from(["BFMShardCrawl", "BFMShardStalled"]),
    st.sampled_from(["firing", "firing", "resolved"]),
    st.integers(0, 5), st.floats(0, 50)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(events, st.sampled_from(["ladder", "cpu", "off"]), st.booleans())
def test_invariants_under_any_event_sequence(seq: list[tuple[str, str, str, int, float]],
                                             mode: str, paused: bool) -> None:
    """Whatever arrives: at most one rung in flight, repeats never act, rungs only climb
    (until a reset), action=off never acts, and crawls never exceed distinct alerts."""
    s, now, worker = ShardLadder("s"), 1000.0, WorkerIdentity(1, 999.0)
    delivered: list[AlertFacts] = []
    for kind, name, status, fp, offset in seq:
        now += 1
        c = Context(now=now, mode=mode, paused=paused, worker=worker)  # type: ignore[arg-type]
        before = s
        if kind == "alert":
            a = AlertFacts(name, status, f"f{fp}", now - offset)  # type: ignore[arg-type]
            t = ladder.on_alert(s, a, c)
            delivered.append(a)
            again = ladder.on_alert(t.state, a, c)
            assert again.decision == "duplicate" and again.start is None
        elif kind == "complete" and s.pending is not None:
            t = ladder.on_complete(s, s.pending.id, "signalled", now)
        elif kind == "manual":
            t = ladder.on_manual(s, "next", "", c)
        elif kind == "reset":
            t = ladder.on_reset(s, "", c)
        elif kind == "newworker" and s.pending is None:
            worker = WorkerIdentity(worker.pid + 1, now)
            continue
        else:
            continue
        s = t.state
        if t.start is not None:
            assert before.pending is None and mode != "off" and not paused
        if t.decision != "reset":
            assert rungs.named(s.rung).level >= rungs.named(before.rung).level
        if mode == "off":
            assert s.rung == "none" and s.pending is None
        assert s.crawls <= len({a.key for a in delivered})
        assert (dict(s.env) == {}) == (s.rung != "cpu")
