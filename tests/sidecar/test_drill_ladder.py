"""A fire drill in the ladder and in the engine: the drilled worker's crawl restarts it for
real, is recorded as a drill, and moves nothing (no crawl counted, rung and environment
as they were) unless --keep; nothing else is ever taken for a drill."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from crawlguard.kernel import drills
from crawlguard.kernel.formats.schema import WorkerJson
from crawlguard.kernel.settings import Remediation
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import WorkerIdentity, register_worker
from crawlguard.sidecar import ladder
from crawlguard.sidecar.engine import Engine
from crawlguard.sidecar.ladder import AlertFacts, Context, Drill, ShardLadder

W1 = WorkerIdentity(pid=100, create_time=1000.0)
W2 = WorkerIdentity(pid=200, create_time=2000.0)
DRILL = Drill(id="d1", worker=W1, started_at=1100.0)


def alert(starts: float, fp: str = "aaaa", name: str = "BFMShardCrawl",
          pid: int | None = None) -> AlertFacts:
    return AlertFacts(alertname=name, status="firing", fingerprint=fp, starts_at=starts, pid=pid)


def ctx(now: float, drill: Drill | None = DRILL, **kw: object) -> Context:
    return Context(now=now, worker=kw.pop("worker", W1), drill=drill, **kw)  # type: ignore[arg-type]


def test_the_drills_crawl_restarts_the_worker_and_moves_nothing() -> None:
    t = ladder.on_alert(ShardLadder("s"), alert(1150, pid=100), ctx(1160))
    assert t.decision == "drill" and t.start is not None
    assert t.start.rung == "restart" and t.start.source == "drill" and t.start.worker == W1
    s = t.state
    assert s.crawls == 0 and s.rung == "none" and s.env == {}
    assert [e.kind for e in s.history] == ["drill", "rung"]
    assert s.history[0].reason == "drill d1: not counted as a crawl"
    # Its Stalled twin is the same episode; after the restart the shard is as before.
    t2 = ladder.on_alert(s, alert(1155, fp="bbbb", name="BFMShardStalled"), ctx(1161))
    assert t2.decision == "in_progress"
    done = ladder.on_complete(t2.state, t.start.id, "signalled", 1170).state
    assert done.crawls == 0 and done.rung == "none" and done.episode is None
    # The next real crawl (of the relaunched worker) is the shard's first: a restart.
    real = ladder.on_alert(done, alert(2100), ctx(2110, drill=None, worker=W2))
    assert real.decision == "rung" and real.state.crawls == 1 and real.state.rung == "restart"


def test_a_drill_after_a_real_restart_is_still_a_restart_and_no_cpu_rung() -> None:
    s = ShardLadder("s", crawls=1, rung="restart")
    t = ladder.on_alert(s, alert(1150), ctx(1160))
    assert t.decision == "drill" and t.start is not None and t.start.rung == "restart"
    assert t.state.rung == "restart" and t.state.crawls == 1 and t.state.env == {}
    # Even with HELIX_BFM_CRAWL_ACTION=cpu the drill only restarts.
    t = ladder.on_alert(ShardLadder("s"), alert(1150), ctx(1160, mode="cpu"))
    assert t.start is not None and t.start.rung == "restart" and t.state.env == {}


def test_keep_judges_the_drills_crawl_like_any_other() -> None:
    kept = Drill(id="d2", worker=W1, started_at=1100.0, keep=True)
    t = ladder.on_alert(ShardLadder("s"), alert(1150), ctx(1160, drill=kept))
    assert t.decision == "rung" and t.state.crawls == 1 and t.state.rung == "restart"
    assert t.state.history[0].kind == "crawl"
    assert t.state.history[0].reason == "drill d2 (--keep): counted"
    second = ShardLadder("s", crawls=1, rung="restart")
    t = ladder.on_alert(second, alert(1150), ctx(1160, drill=kept))
    assert t.start is not None and t.start.rung == "cpu" and t.state.env == {"BGEM3_DEVICE": "cpu"}


def test_off_and_paused_record_the_drill_and_take_nothing() -> None:
    for kw, why in (({"mode": "off"}, "alert only"), ({"paused": True}, "restart not taken")):
        t = ladder.on_alert(ShardLadder("s"), alert(1150), ctx(1160, **kw))
        assert t.decision == "drill" and t.start is None and t.state.crawls == 0
        assert t.state.pending is None and why in (t.state.history[-1].reason or "")


def test_only_the_drilled_workers_alerts_that_began_after_the_drill_are_the_drills() -> None:
    # Another registered worker, an alert about another pid, one that began before.
    for facts, c in ((alert(1150), ctx(1160, worker=W2)),
                     (alert(1150, pid=999), ctx(1160)),
                     (alert(1099), ctx(1160))):
        t = ladder.on_alert(ShardLadder("s"), facts, c)
        assert t.decision != "drill", (facts, c)
    # A dead worker's OOM during a drill is no drill either.
    oom = AlertFacts("BFMShardOOM", "firing", "cccc", 1150, worker=W1.key)
    assert ladder.on_alert(ShardLadder("s"), oom, ctx(1160)).decision == "rung"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4), st.floats(0, 80)), max_size=30),
       st.booleans())
def test_drills_never_count_or_climb(seq: list[tuple[bool, int, float]], keep: bool) -> None:
    """Whatever arrives during a drill that is not --keep: crawls and rung stay as the
    real alerts alone would leave them."""
    with_drill, alone = ShardLadder("s"), ShardLadder("s")
    drill = Drill("d", W1, 1100.0, keep=keep)
    now = 1100.0
    for is_real, fp, back in seq:
        now += 1
        worker = W2 if is_real else W1
        a = alert(now - back, fp=f"f{fp}{is_real}")
        t = ladder.on_alert(with_drill, a, ctx(now, drill=drill, worker=worker))
        with_drill = t.state
        if t.start is not None:
            with_drill = ladder.on_complete(with_drill, t.start.id, "signalled", now).state
        if is_real or keep or a.starts_at < drill.started_at:
            u = ladder.on_alert(alone, a, ctx(now, drill=None, worker=worker))
            alone = u.state
            if u.start is not None:
                alone = ladder.on_complete(alone, u.start.id, "signalled", now).state
        if not keep:
            assert with_drill.crawls <= alone.crawls
            assert with_drill.env == {} or with_drill.rung == "cpu"


def test_the_engine_reads_a_live_drill_and_ignores_a_dead_ones_file(tmp_path: Path) -> None:
    """The sidecar's context: a drill counts only while its process runs (pid AND creation
    time) and before its deadline."""
    state = StateDir(tmp_path)
    me = WorkerIdentity.current()
    register_worker(state, "s", me)
    engine = Engine(state, Remediation(), clock=lambda: 5000.0)
    doc = drills.DrillFile(id="d9", shard="s", worker=WorkerJson.of(me),
                           drill=WorkerJson.of(me), started_at=4000.0, until=6000.0,
                           shared_bytes=1 << 30)
    drills.write_drill(state, doc)
    c = engine._context("s")
    assert c.drill is not None and c.drill.id == "d9" and c.drill.worker.same_as(me)
    # A drill whose process is gone (same pid, another creation time), or past its deadline.
    gone = doc.model_copy(update={"drill": WorkerJson(pid=os.getpid(),
                                                      create_time=me.create_time - 10)})
    drills.write_drill(state, gone)
    assert engine._context("s").drill is None
    drills.write_drill(state, doc.model_copy(update={"until": 4500.0}))
    assert engine._context("s").drill is None
    # A damaged file is no drill (and no error for the alert being judged).
    drills.drill_path(state, "s").write_text("{")
    assert engine._context("s").drill is None
