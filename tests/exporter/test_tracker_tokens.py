"""Token-judged batches, progress (total=) and OOM batches through the tracker itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crawlguard import CrawlTracker
from crawlguard.kernel import oom
from crawlguard.kernel.statedir import StateDir

from .test_tracker import FakeClock, make, value


def _cost(rows: int, longest: int) -> float:
    """A forward's seconds: 2 ms fixed, 10 us per padded token, 5 ns per token and position."""
    return 0.002 + 10e-6 * rows * longest + 5e-9 * rows * longest * longest


def test_batches_are_judged_by_their_shape_and_the_gauges_stay_genes_per_second(
        state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock, warmup_batches=1, baseline_batches=3)
    # Longest texts first, then shorter, then one-text batches: genes/s varies 40-fold,
    # the pace (predicted / actual seconds) hardly at all.
    shapes = [(8, 1000)] * 4 + [(8, 100)] * 3 + [(8, 10)] * 3 + [(1, 12)] * 10
    for rows, longest in shapes:
        with t.batch(genes=rows, tokens=rows * longest):
            clock.now += _cost(rows, longest)
    assert t.unit == "tokens" and t.streak == 0 and not t.crawling
    ema = value(state_dir, "bfm_genes_per_second_ema")
    base = value(state_dir, "bfm_genes_per_second_baseline")
    assert ema is not None and base is not None and 0.5 < ema / base <= 2.0
    # The baseline is the median genes/s of the baseline batches (8 genes of 1,000 tokens).
    assert base == pytest.approx(8 / _cost(8, 1000), rel=1e-3)
    assert value(state_dir, "bfm_genes_per_second") == pytest.approx(1 / _cost(1, 12), rel=1e-3)
    assert value(state_dir, "bfm_tokens_total") == 8 * (4000 + 300 + 30) + 120
    saved = json.loads(StateDir(state_dir).baseline_file("confluence", "backfill",
                                                         "cuda:0").read_text())
    assert saved["unit"] == "tokens" and saved["model"] == 2
    assert len(saved["batches"]) == 3 and saved["baseline"] == pytest.approx(base)


def test_a_crawl_is_caught_in_any_shape(state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock)
    mix = [(32, 14), (16, 700), (1, 8), (4, 30), (32, 200)]
    for i in range(40):  # healthy: every shape learnt
        rows, longest = mix[i % len(mix)]
        with t.batch(genes=rows, tokens=rows * longest):
            clock.now += _cost(rows, longest)
    assert t.streak == 0
    caught = None
    for i in range(30):  # ten times slower, the same mix
        rows, longest = mix[i % len(mix)]
        with t.batch(genes=rows, tokens=rows * longest):
            clock.now += 10 * _cost(rows, longest)
        if t.crawling and caught is None:
            caught = i + 1
    assert caught is not None and caught <= t.detection.window + 4


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
    second.observe(genes=8, seconds=0.5, tokens=800)
    assert second.baseline == 12.0 and second.unit == "tokens"  # median of 8 and 16


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
