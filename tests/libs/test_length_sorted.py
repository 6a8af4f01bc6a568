"""Length-sorted encodes: genes/s varies many-fold within one call, the pace does not.

sentence-transformers sorts the texts of one ``encode`` by length, longest
first, so with texts of 10 to 2,000 tokens its batches run at wildly
different genes/s. Judged by its shape (``crawlguard.exporter.workmodel``), a
healthy encode never looks like a crawl, and a 10x slowdown part-way through
is caught.

The clock is the process's CPU time, so that other processes on a shared
test machine cannot slow a batch down. The slowdown is that clock running ten
times faster from a chosen batch on: every batch after it takes ten times as
long as measured, as during a spill.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from crawlguard import CrawlTracker
from crawlguard.kernel.settings import Detection
from crawlguard.kernel.statedir import StateDir

from .conftest import require_libs

SLOW_FROM = 10
"""The batch (1-based) from which the slowed run is 10x slower."""
LATE_SLOW_FROM = 20
"""The same, late in the call (of 32 batches)."""


class SlowingClock:
    """Wall time that runs ``factor`` times faster once the tracker has ``after`` batches."""

    def __init__(self, after: int | None, factor: float = 10.0) -> None:
        self.after, self.factor = after, factor
        self.tracker: CrawlTracker | None = None
        self._real = time.process_time()
        self._virtual = time.time()

    def __call__(self) -> float:
        now = time.process_time()
        slow = (self.after is not None and self.tracker is not None
                and self.tracker.batches >= self.after)
        self._virtual += (now - self._real) * (self.factor if slow else 1.0)
        self._real = now
        return self._virtual


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[str]]:
    require_libs("torch", "transformers", "sentence_transformers")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    from tests.libs import models
    directory = models.save_encoder(tmp_path_factory.mktemp("xlmr"), hidden=128)
    word = Transformer(str(directory), max_seq_length=models.MAX_TOKENS)
    model = SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension())],
                                device="cpu")
    # 10 to 2,000 tokens ([CLS] and [SEP] included), in random order.
    return model, models.texts(256, 8, 1998)


def _encode(setup: tuple[Any, list[str]], state_dir: Path, slow_from: int | None,
            calls: int = 1) -> tuple[CrawlTracker, list[tuple[int, float, float]]]:
    """``calls`` encodes of the texts (files of the same shape); 10x slower from batch
    ``slow_from`` (1-based) on."""
    model, texts = setup
    clock = SlowingClock(None if slow_from is None else slow_from - 1)
    tracker = CrawlTracker("docs", "backfill", "cpu", state_dir=state_dir, clock=clock,
                           detection=Detection())
    clock.tracker = tracker
    seen: list[tuple[int, float, float]] = []

    def after_batch(module: Any, args: Any, output: Any) -> None:
        seen.append((tracker.streak, tracker.ema or 0.0, tracker.baseline or 0.0))

    tracker.instrument(model)
    handle = model.register_forward_hook(after_batch)  # runs once crawlguard observed it
    try:
        for _ in range(calls):
            model.encode(texts, batch_size=8)
    finally:
        handle.remove()
    return tracker, seen


@pytest.fixture(scope="module")
def healthy(setup: tuple[Any, list[str]], tmp_path_factory: pytest.TempPathFactory,
            ) -> tuple[CrawlTracker, list[tuple[int, float, float]], Path]:
    state_dir = tmp_path_factory.mktemp("healthy")
    tracker, seen = _encode(setup, state_dir, None)
    return tracker, seen, state_dir


def test_healthy_length_sorted_encode_is_no_crawl(
        healthy: tuple[CrawlTracker, list[tuple[int, float, float]], Path]) -> None:
    tracker, seen, _ = healthy
    assert tracker.batches == 32 and tracker.unit == "tokens"
    ratios = [ema / base for _, ema, base in seen if base]
    print(f"\nhealthy: EMA/baseline per batch {[round(r, 2) for r in ratios]}")
    # Every batch, from 2,000-token texts down to 10-token ones, runs near its
    # predicted time: the EMA never comes under the crawl threshold (1/5) at all
    # (bench/bench_shapes.py measures the margins without CPU-time noise).
    assert not tracker.crawling and max(streak for streak, _, _ in seen) == 0
    assert min(ratios) > 1 / tracker.detection.factor


def test_genes_per_second_alone_would_misjudge_it(
        healthy: tuple[CrawlTracker, list[tuple[int, float, float]], Path]) -> None:
    # The reason for judging shapes: the same batches in rows per second.
    lines = [json.loads(line) for line in
             StateDir(healthy[2]).batches_file("docs").read_text().splitlines()]
    warmup, count = Detection().warmup_batches, Detection().baseline_batches
    baseline = statistics.median(b["rate"] for b in lines[warmup:warmup + count])
    spread = max(b["rate"] for b in lines) / baseline
    print(f"\nthe same batches in genes/s: up to {spread:.0f}x the baseline")
    assert spread > 5


def _caught(tracker: CrawlTracker, seen: list[tuple[int, float, float]]) -> int | None:
    return next((i + 1 for i, (streak, _, _) in enumerate(seen)
                 if streak >= tracker.detection.window), None)


def test_ten_times_slower_part_way_is_caught(setup: tuple[Any, list[str]],
                                             state_dir: Path) -> None:
    tracker, seen = _encode(setup, state_dir, SLOW_FROM)
    caught = _caught(tracker, seen)
    assert caught is not None, f"not caught; streaks {[s for s, _, _ in seen]}"
    delay = caught - SLOW_FROM + 1
    print(f"\nslowed 10x from batch {SLOW_FROM}: crawl signature on batch {caught}, "
          f"{delay} batches after the slowdown began (window "
          f"{tracker.detection.window})")
    # The EMA needs 3-4 batches to fall under baseline / factor, then a window.
    assert delay <= tracker.detection.window + 5


def test_a_slowdown_late_in_a_call_is_caught_by_the_next(setup: tuple[Any, list[str]],
                                                         state_dir: Path) -> None:
    # From batch 20 of 32 the call's batches shrink to a tenth of anything learnt, where
    # a forward's fixed cost is unknown: those are not judged while the EMA is already
    # low (they are no evidence either way), and the next call's batches are.
    tracker, seen = _encode(setup, state_dir, LATE_SLOW_FROM, calls=2)
    caught = _caught(tracker, seen)
    assert caught is not None, f"not caught; streaks {[s for s, _, _ in seen]}"
    print(f"\nslowed 10x from batch {LATE_SLOW_FROM}: crawl signature on batch {caught}")
    assert caught <= 32 + tracker.detection.window
