"""Rungs verified by evidence (sidecar/verify.py): real sidecar, real workers, real files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from crawlguard.cli.main import main
from crawlguard.gpu.shared import FileSharedSource
from crawlguard.kernel.formats.batchlog import Batch
from crawlguard.kernel.processes import CREATE_TIME_EARLY_S
from crawlguard.kernel.settings import Detection
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import WorkerIdentity
from crawlguard.report.evidence import load_run
from crawlguard.report.summary import summary_markdown
from crawlguard.sidecar import ladder
from crawlguard.sidecar.ladder import Context, Entry, ShardLadder
from crawlguard.sidecar.state import LadderStore
from crawlguard.sidecar.verify import (
    SHARED_CLEAR_BYTES,
    VerificationCollector,
    Verifier,
    assess,
    due_rung,
)
from tests.sidecar.conftest import TOKEN, Live, Worker, alert, payload

MIB = 1 << 20
DET = Detection(warmup_batches=2, baseline_batches=5)
OLD = WorkerIdentity(100, 1000.0)
NEW = WorkerIdentity(200, 2000.0)


def batch(t: float, rate: float, pid: int = NEW.pid, baseline: float | None = 15.0) -> Batch:
    return Batch(t=t, stage="backfill", device="cuda:0", gpu="0", pid=pid, genes=64,
                 seconds=64 / rate, rate=rate, ema=rate, baseline=baseline, streak=0, factor=5)


def restarted(state: ShardLadder | None = None) -> tuple[ShardLadder, Entry]:
    state = state or ShardLadder("s1")
    t = ladder.on_manual(state, "restart", "drill", Context(now=1500.0, worker=OLD))
    state = ladder.on_complete(t.state, "r1", "signalled", 1600.0).state
    rung = due_rung(state)
    assert rung is not None and rung.id == "r1"
    return state, rung


def test_a_restart_is_due_until_verified_and_only_the_last_rung_counts() -> None:
    state, rung = restarted()
    v = assess(rung, NEW, [batch(2000 + i, 15.0) for i in range(7)], 0, DET)
    assert v is not None
    state = ladder.on_verified(state, v.entry(2100.0))
    assert due_rung(state) is None
    assert (state.crawls, state.rung, state.episode) == (0, "restart", None)
    cpu = ladder.on_manual(state, "cpu", "", Context(now=3000.0, worker=NEW)).state
    assert due_rung(ladder.on_complete(cpu, "r2", "signalled", 3001.0).state) is None


def test_not_before_the_new_worker_has_run_warmup_plus_baseline_batches() -> None:
    _, rung = restarted()
    rows = [batch(2000 + i, 15.0) for i in range(6)]
    assert assess(rung, NEW, rows, 0, DET) is None
    assert assess(rung, OLD, [batch(2000 + i, 15.0, OLD.pid) for i in range(9)], 0, DET) is None
    other = [batch(2000 + i, 15.0, pid=999) for i in range(9)]
    assert assess(rung, NEW, rows + other, 0, DET) is None
    v = assess(rung, NEW, [*rows, batch(2007, 14.7)], 0, DET)
    assert v is not None and v.batches == 5


def test_the_line_people_read() -> None:
    _, rung = restarted()
    warm = [batch(2000, 3.0), batch(2001, 7.0)]  # warm-up: never judged
    good = assess(rung, NEW, [*warm, *(batch(2002 + i, r) for i, r in
                                       enumerate((14.0, 14.7, 15.2, 14.9, 14.5)))], 0, DET)
    assert good is not None and good.verified
    assert good.summary == "restart verified: shared 0 B, rate 98 % of baseline"
    spilled = assess(rung, NEW, [*warm, *(batch(2002 + i, 2.3) for i in range(5))],
                     1536 * MIB, DET)
    assert spilled is not None and not spilled.verified
    assert spilled.summary == "restart NOT verified: shared 1.5 GiB, rate 15 % of baseline"
    fast_but_spilled = assess(rung, NEW, [*warm, *(batch(2002 + i, 15.0) for i in range(5))],
                              SHARED_CLEAR_BYTES + 1, DET)
    assert fast_but_spilled is not None and not fast_but_spilled.verified
    linux = assess(rung, NEW, [*warm, *(batch(2002 + i, 15.0) for i in range(5))], None, DET)
    assert linux is not None and linux.verified
    assert linux.summary == "restart verified: shared not measured, rate 100 % of baseline"


def write_batches(state_dir: Path, shard: str, worker: WorkerIdentity, rates: list[float],
                  baseline: float = 15.0) -> None:
    path = StateDir(state_dir).batches_file(shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for i, rate in enumerate(rates):
            fh.write(json.dumps({"stage": "backfill", "device": "cuda:0", "gpu": "0",
                                 "pid": worker.pid, "factor": 5.0,
                                 "t": worker.create_time + CREATE_TIME_EARLY_S + i,
                                 "genes": 64,
                                 "seconds": 64 / rate, "rate": rate, "ema": rate,
                                 "baseline": baseline, "streak": 0}) + "\n")


@pytest.mark.parametrize("early_starts", [0.0, 1.0], indirect=True)
def test_the_sidecar_records_the_verification_and_status_report_and_metrics_show_it(
        early_starts: float,
        sidecar_thread: Callable[..., Live], spawn_worker: Callable[..., Worker],
        state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    live = sidecar_thread()
    old = spawn_worker("s1")
    r = live.client.post("/v1/shards/s1/rung", json={"rung": "restart", "reason": "drill"})
    assert r.status_code == 202, r.text
    live.settled("s1")
    old.wait_exit()
    new = spawn_worker("s1")  # registers itself as the shard's worker
    shared = tmp_path / "shared.json"
    shared.write_text(json.dumps({"processes": [{"pid": new.identity.pid, "shared_bytes": 0}]}))
    assert live.engine is not None
    verifier = Verifier(live.engine.store, DET, FileSharedSource(shared))  # the sidecar's one

    write_batches(state_dir, "s1", new.identity, [5.0, 9.0, 14.0, 14.7])
    assert verifier.step() == []  # four of the seven batches it takes
    write_batches(state_dir, "s1", new.identity, [15.2, 14.9, 14.5])
    [(shard, entry)] = verifier.step()
    assert shard == "s1" and entry.reason == ("restart verified: shared 0 B, rate 98 % of "
                                              "baseline")
    assert verifier.step() == []  # recorded once

    view = live.shard("s1")
    verified = view["history"][-1]
    assert (verified["kind"], verified["id"], verified["outcome"]) == ("verified", "r1",
                                                                       "verified")
    assert verified["shared_bytes"] == 0 and verified["worker"]["pid"] == new.identity.pid

    monkeypatch.setenv("HELIX_BFM_SIDECAR_URL", live.url)
    monkeypatch.setenv("HELIX_BFM_SIDECAR_TOKEN", TOKEN)
    assert main(["status"]) == 0
    assert "r1 restart verified: shared 0 B, rate 98 % of baseline" in capsys.readouterr().out
    assert main(["status", "s1"]) == 0
    assert "verified     rung=restart outcome=verified reason=restart verified" in \
        capsys.readouterr().out

    registry = CollectorRegistry()
    registry.register(VerificationCollector(live.engine.store))
    text = generate_latest(registry).decode()
    assert 'crawlguard_sidecar_restart_verified{shard="s1"} 1.0' in text
    assert 'crawlguard_sidecar_restart_verified_shared_bytes{shard="s1"} 0.0' in text

    report = summary_markdown(load_run(state_dir))
    assert "r1: restart verified: shared 0 B, rate 98 % of baseline" in report

    # The fresh context spills again: the verification changed nothing of the ladder,
    # so this crawl climbs past the restart already taken, to the CPU rung.
    # The new worker's alert: it began after its worker did, which is at most
    # CREATE_TIME_EARLY_S after its recorded creation time (and after the restart).
    out = live.post_alerts(payload(alert("s1", new.identity.create_time + CREATE_TIME_EARLY_S,
                                         "fp2")))
    assert out["decisions"][0]["decision"] == "rung", out
    state = live.settled("s1")
    assert (state["crawls"], state["rung"]) == (1, "cpu")
    assert LadderStore(StateDir(state_dir)).load("s1").env == {"BGEM3_DEVICE": "cpu"}
