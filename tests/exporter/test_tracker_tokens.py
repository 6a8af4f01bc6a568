"""Token-judged batches, progress (total=) and OOM batches through the tracker itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crawlguard import CrawlTracker
from crawlguard.kernel import oom
from crawlguard.kernel.statedir import StateDir

from .test_tracker import FakeClock, make, value


def test_tokens_judge_the_rate_and_the_gauges_stay_genes_per_second(state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock, warmup_batches=1, baseline_batches=3)
    # Longest texts first: 8 genes of 1,000 tokens, then of 100 and of 10 tokens,
    # all at 10,000 tokens/s. Genes/s varies 100-fold; tokens/s not at all.
    for tokens_per_gene in (1000, 1000, 1000, 1000, 100, 100, 10, 10):
        start = t.begin(8)
        clock.now += 8 * tokens_per_gene / 10_000
        t.finish(8, start, tokens=8 * tokens_per_gene)
    assert t.unit == "tokens" and t.streak == 0 and not t.crawling
    # EMA / baseline (what the rules judge) is the token ratio: 1.
    ema = value(state_dir, "bfm_genes_per_second_ema")
    base = value(state_dir, "bfm_genes_per_second_baseline")
    assert ema is not None and base is not None and ema / base == pytest.approx(1.0, rel=1e-4)
    # The baseline reads as genes/s at the baseline batches' genes per token.
    assert base == pytest.approx(10.0, rel=1e-4)
    assert value(state_dir, "bfm_genes_per_second") == pytest.approx(1000.0, rel=1e-4)
    assert value(state_dir, "bfm_tokens_total") == 8 * (4000 + 200 + 20)
    saved = json.loads(StateDir(state_dir).baseline_file("confluence", "backfill",
                                                         "cuda:0").read_text())
    assert saved["unit"] == "tokens" and saved["genes_per_unit"] == pytest.approx(0.001)


def test_a_baseline_in_another_unit_is_measured_again(state_dir: Path) -> None:
    clock = FakeClock()
    first = make(state_dir, clock, warmup_batches=0, baseline_batches=2)
    for _ in range(2):
        first.observe(genes=8, seconds=1.0)
    assert first.baseline == 8.0 and first.unit == "genes"
    second = make(state_dir, clock, warmup_batches=0, baseline_batches=2)
    assert second.baseline == 8.0                      # persisted, in genes
    second.observe(genes=8, seconds=1.0, tokens=800)   # but this build counts tokens
    assert second.baseline is None and second.unit == "tokens"


def test_total_gives_genes_remaining(state_dir: Path) -> None:
    clock = FakeClock()
    make(state_dir, clock)
    assert value(state_dir, "bfm_genes_remaining") is None  # no total, no series
    tracked = CrawlTracker("wiki", "backfill", "cuda:0", state_dir=state_dir, clock=clock,
                           env={}, total=100)
    assert value(state_dir, "bfm_genes_remaining", shard="wiki") == 100
    for _ in range(3):
        tracked.observe(genes=40, seconds=1.0)
    assert tracked.remaining == 0 and value(state_dir, "bfm_genes_remaining", shard="wiki") == 0
    line = StateDir(state_dir).batches_file("wiki").read_text().splitlines()[0]
    assert json.loads(line)["remaining"] == 60.0 and json.loads(line)["total"] == 100
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="total"):
            CrawlTracker("wiki", state_dir=state_dir, total=bad)  # type: ignore[arg-type]


def test_an_oom_batch_is_recorded_and_counted(state_dir: Path) -> None:
    class OutOfMemoryError(RuntimeError):
        pass
    OutOfMemoryError.__module__ = "torch"  # what torch's class looks like, without torch
    clock = FakeClock()
    t = make(state_dir, clock)
    with pytest.raises(OutOfMemoryError), t.batch(genes=16):
        raise OutOfMemoryError("CUDA out of memory")
    (rec,) = oom.read_records(StateDir(state_dir), "confluence")
    assert rec.genes == 16 and rec.key == t.identity_key and not rec.recovered
    assert value(state_dir, "bfm_oom_batches_total") == 1
    assert value(state_dir, "bfm_batch_inflight_genes") == 0
    t.observe(genes=16, seconds=1.0)  # the build went on: it survived
    (rec,) = oom.read_records(StateDir(state_dir), "confluence")
    assert rec.recovered
