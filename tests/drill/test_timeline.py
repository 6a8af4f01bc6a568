"""What a drill reports, from the shard's files: which alert and rung were the drill's,
when the crawl was detected, and the one JSON object of the contract."""

from __future__ import annotations

from typing import Any

from crawlguard.drill import timeline
from crawlguard.kernel.formats.batchlog import Batch
from crawlguard.kernel.formats.ladderfile import HistoryEntry
from crawlguard.kernel.formats.schema import WorkerJson
from crawlguard.kernel.workers import Registration, WorkerIdentity

W = WorkerIdentity(100, 1000.0)
OTHER = WorkerIdentity(200, 2000.0)
ONSET = 5000.0


def entry(kind: str, at: float, worker: WorkerIdentity | None = W, **kw: Any) -> HistoryEntry:
    return HistoryEntry(kind=kind, at=at, worker=None if worker is None else WorkerJson.of(worker),
                        **kw)


def batch(t: float, streak: int, pid: int = 100) -> Batch:
    return Batch(t=t, stage="backfill", device="cuda:0", gpu="0", pid=pid, genes=8.0,
                 seconds=0.4, rate=20.0, ema=25.0, baseline=200.0, streak=streak, factor=5.0)


def test_the_drills_alert_its_rung_and_verification_are_found() -> None:
    history = [
        entry("crawl", ONSET - 50, alertname="BFMShardCrawl"),           # before the drill
        entry("drill", ONSET + 9, worker=OTHER, alertname="BFMShardCrawl"),  # another worker
        entry("drill", ONSET + 10, alertname="BFMShardCrawl", starts_at=ONSET + 9.5),
        entry("rung", ONSET + 10, id="r3", rung="restart", source="drill",
              decided_at=ONSET + 10, outcome="signalled", effective_at=ONSET + 11),
        entry("verified", ONSET + 20, worker=OTHER, id="r3", rung="restart",
              outcome="verified", reason="restart verified: shared 0 B, rate 99 % of baseline"),
    ]
    seen = timeline.seen(history, W, ONSET)
    assert seen.acted and seen.alert is history[2] and seen.rung is history[3]
    assert seen.verified is history[4] and seen.not_taken is None
    # A rung forced by hand in the meantime is not the ladder acting.
    manual = [history[2], entry("rung", ONSET + 10, id="r4", rung="restart", source="manual",
                                decided_at=ONSET + 10)]
    assert not timeline.seen(manual, W, ONSET).acted


def test_an_alert_without_a_rung_says_why() -> None:
    paused = [entry("drill", ONSET + 3, alertname="BFMShardStalled",
                    reason="drill d1: not counted as a crawl; paused: restart not taken")]
    seen = timeline.seen(paused, W, ONSET)
    assert not seen.acted and "paused" in (seen.not_taken or "")
    refused = [entry("crawl", ONSET + 3, alertname="BFMShardCrawl"),
               entry("refused", ONSET + 3, rung="restart", reason="paused")]
    assert timeline.seen(refused, W, ONSET).not_taken == "paused"
    assert timeline.seen([], W, ONSET) == timeline.Seen()


def test_detection_is_the_batch_whose_streak_reached_the_window() -> None:
    rows = [batch(ONSET - 1, 0), *(batch(ONSET + i, max(0, i - 3)) for i in range(1, 14)),
            batch(ONSET + 2.5, 9, pid=999)]
    d = timeline.detection(rows, W, ONSET, window=8, alert=None)
    assert d == timeline.Detection(batches=11, at=ONSET + 11, by="streak")
    # A stall: no batch got there; the batches before the alert began count.
    stall = entry("drill", ONSET + 30, alertname="BFMShardStalled", starts_at=ONSET + 6.5)
    assert timeline.detection(rows[:5], W, ONSET, 8, stall) == timeline.Detection(
        4, ONSET + 6.5, "stall")
    assert timeline.detection(rows[:5], W, ONSET, 8, None) is None


def test_the_json_object_has_exactly_the_contracts_keys() -> None:
    history = [entry("drill", ONSET + 10, alertname="BFMShardCrawl", starts_at=ONSET + 9),
               entry("rung", ONSET + 10.5, id="r1", rung="restart", source="drill",
                     decided_at=ONSET + 10.5)]
    seen = timeline.seen(history, W, ONSET)
    reg = Registration(shard="s", pid=300, create_time=ONSET + 12, registered_at=ONSET + 12.2)
    report = timeline.Report(shard="s", alert_path="embedded", worker=W, onset=ONSET, seen=seen,
                             detected=timeline.Detection(9, ONSET + 8.9, "streak"),
                             relaunch=reg, keep=False)
    out = report.as_json()
    assert tuple(sorted(out)) == tuple(sorted(timeline.JSON_KEYS))
    assert out == {"shard": "s", "acted": True, "rung": "restart", "onset_to_alert_s": 10.0,
                   "onset_to_signal_s": 10.5, "detected_after_batches": 9,
                   "alert_path": "embedded"}
    text = "\n".join(report.lines())
    for word in ("onset", "detection: batch 9", "alert: BFMShardCrawl", "rung: restart r1",
                 "relaunch: worker pid 300", "not recorded", "not counted"):
        assert word in text, (word, text)
    none = timeline.Report(shard="s", alert_path="external", worker=W, onset=ONSET,
                           seen=timeline.Seen(), detected=None, relaunch=None, keep=False,
                           why="no rung within the timeout (60s)")
    assert none.as_json() == {"shard": "s", "acted": False, "rung": "none",
                              "onset_to_alert_s": None, "onset_to_signal_s": None,
                              "detected_after_batches": None, "alert_path": "external"}
    assert "the ladder did not act: no rung within the timeout" in "\n".join(none.lines())
