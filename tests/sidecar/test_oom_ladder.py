"""OOM deaths on the ladder: BFMShardOOM is the crawl's twin (pure state machine + triage)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

from crawlguard.kernel.workers import WorkerIdentity
from crawlguard.sidecar import ladder
from crawlguard.sidecar.ladder import AlertFacts, Context, ShardLadder
from crawlguard.sidecar.webhook import Alert, triage

DEAD1 = WorkerIdentity(pid=100, create_time=1000.0)
DEAD2 = WorkerIdentity(pid=200, create_time=2000.0)
NEXT = WorkerIdentity(pid=300, create_time=3000.0)


def oom(starts: float, worker: WorkerIdentity, fp: str = "oom1") -> AlertFacts:
    return AlertFacts(alertname="BFMShardOOM", status="firing", fingerprint=fp,
                      starts_at=starts, worker=worker.key)


def done(t: ladder.Transition, outcome: str, effective: float) -> ShardLadder:
    assert t.start is not None
    return ladder.on_complete(t.state, t.start.id, outcome, effective).state


def test_first_oom_death_is_a_restart_of_the_dead_worker_not_its_successor() -> None:
    # The supervisor already relaunched: the registered worker is the successor.
    t = ladder.on_alert(ShardLadder("s"), oom(2500, DEAD1), Context(now=3100, worker=NEXT))
    assert t.decision == "rung" and t.start is not None and t.start.rung == "restart"
    assert t.start.worker is not None and t.start.worker.same_as(DEAD1)  # nothing alive to kill
    assert t.state.crawls == 1 and t.state.env == {}
    # Not "stale" although it began before the registered successor was created.
    assert t.state.history[0].kind == "crawl"


def test_second_oom_death_demotes_to_cpu_and_restarts_a_successor_on_the_gpu() -> None:
    s = done(ladder.on_alert(ShardLadder("s"), oom(1500, DEAD1), Context(now=1510,
                                                                         worker=DEAD1)),
             "already_gone", 1510)
    waited = ladder.on_alert(s, oom(2500, DEAD2, fp="oom2"), Context(now=2510, worker=DEAD2))
    assert waited.start is not None and waited.start.rung == "cpu"
    assert waited.start.worker is not None and waited.start.worker.same_as(DEAD2)
    assert waited.state.env == {"BGEM3_DEVICE": "cpu"} and waited.state.crawls == 2
    # The supervisor did not wait: a GPU successor runs and must take the CPU env.
    raced = ladder.on_alert(s, oom(2500, DEAD2, fp="oom2"), Context(now=3100, worker=NEXT))
    assert raced.start is not None and raced.start.rung == "cpu" and raced.start.worker == NEXT


def test_one_rung_per_dead_worker() -> None:
    t = ladder.on_alert(ShardLadder("s"), oom(1500, DEAD1), Context(now=1510, worker=DEAD1))
    s = done(t, "already_gone", 1510)
    # Alertmanager repeats it, and a second series of the same death (another stage).
    assert ladder.on_alert(s, oom(1500, DEAD1), Context(now=1700, worker=NEXT)).decision == \
        "duplicate"
    # A crawl alert of the same worker before it died, then its OOM: one episode.
    off = Context(now=1200, worker=DEAD1, mode="off")  # the episode stays open
    c = ladder.on_alert(ShardLadder("s"), AlertFacts("BFMShardCrawl", "firing", "c1", 1100.0),
                        off)
    assert c.decision == "alert_only"
    same = ladder.on_alert(c.state, oom(1250, DEAD1), replace(off, now=1260, worker=NEXT))
    assert same.decision == "same_episode" and same.state.crawls == 1
    c = ladder.on_alert(ShardLadder("s"), AlertFacts("BFMShardCrawl", "firing", "c1", 1100.0),
                        Context(now=1200, worker=DEAD1))
    assert c.decision == "rung"
    paused = ladder.on_alert(c.state, oom(1250, DEAD1), Context(now=1260, worker=DEAD1))
    assert paused.decision == "in_progress"
    after = ladder.on_alert(done(c, "signalled", 1300), oom(1250, DEAD1, fp="o2"),
                            Context(now=1310, worker=NEXT))
    assert after.decision == "stale" and after.state.crawls == 1


def _alert(labels: dict[str, str]) -> Alert:
    return Alert.model_validate({
        "status": "firing", "labels": {"alertname": "BFMShardOOM", "shard": "docs", **labels},
        "startsAt": datetime(2026, 1, 1, tzinfo=timezone.utc).isoformat(),
        "fingerprint": "abc123"})


def test_triage_takes_the_dead_worker_from_the_worker_label() -> None:
    t = triage(_alert({"worker": DEAD1.key, "pid": "100"}))
    assert t.facts is not None and t.facts.worker == DEAD1.key and t.shard == "docs"
    bad = triage(_alert({"pid": "100"}))
    assert bad.facts is None and bad.ignored == "unsafe_worker"
