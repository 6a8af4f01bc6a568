"""The work model and what is judged in work: pace, stall limit, persistence, flights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from crawlguard import CrawlTracker
from crawlguard.exporter.baseline import EnvelopeRecord, load_baseline_record
from crawlguard.exporter.rate import HELD_OVER, RateState
from crawlguard.exporter.workmodel import MAX_SEEN, Envelope, Shape, padded_shape, tokens_shape
from crawlguard.kernel.formats.batchlog import Batch, BatchTail
from crawlguard.kernel.settings import Detection
from crawlguard.kernel.statedir import StateDir
from crawlguard.rig.liveview import eta_seconds

from .test_tracker import FakeClock, make, value

DET = Detection()


def cost(a: float, b: float, c: float, shape: Shape) -> float:
    return a + b * shape.tokens + c * shape.quad


shapes = st.tuples(st.integers(1, 64), st.integers(1, 2048)).map(lambda p: padded_shape(*p))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=st.floats(1e-4, 0.1), b=st.floats(1e-7, 1e-4), c=st.floats(0.0, 1e-7),
       learnt=st.lists(shapes, min_size=DET.warmup_batches + DET.baseline_batches,
                       max_size=40),
       judged=st.lists(shapes, min_size=1, max_size=40),
       noise=st.lists(st.floats(1.0, 1.3), min_size=80, max_size=80))
def test_a_healthy_batch_of_any_shape_is_never_a_crawl(
        a: float, b: float, c: float, learnt: list[Shape], judged: list[Shape],
        noise: list[float]) -> None:
    """Whatever a forward's fixed, per-token and attention costs and whatever shapes
    come in whatever order, batches at the healthy pace (up to 30 % slower, never
    faster) keep the EMA ratio above the crawl threshold: no streak at all."""
    state = RateState(DET)
    for i, shape in enumerate(learnt + judged):
        state.observe(shape.rows, cost(a, b, c, shape) * noise[i % len(noise)], shape)
        if state.ratio is not None and state.model is not None:
            assert state.ratio > 1 / DET.factor
    assert state.streak == 0


costs = {"a": st.floats(1e-4, 0.1), "b": st.floats(1e-7, 1e-4), "c": st.floats(0.0, 1e-7)}
CAUGHT = DET.window + 5
"""Batches from a deep crawl's onset to the signature: the EMA's lag and a window."""


def healthy_run(a: float, b: float, c: float, shapes: list[Shape]) -> RateState:
    """A shard that ran ``shapes`` healthy (after its warm-up and baseline on them)."""
    state = RateState(DET)
    for shape in shapes * (DET.warmup_batches + DET.baseline_batches) + shapes:
        state.observe(shape.rows, cost(a, b, c, shape), shape)
    assert state.model is not None and state.streak == 0
    return state


def slowed(state: RateState, a: float, b: float, c: float, cycle: list[Shape],
           slow: float, batches: int = CAUGHT) -> RateState:
    for i in range(batches):
        shape = cycle[i % len(cycle)]
        state.observe(shape.rows, slow * cost(a, b, c, shape), shape)
    return state


@settings(max_examples=150, deadline=None)
@given(**costs, learnt=st.lists(shapes, min_size=1, max_size=5),
       fresh=st.lists(shapes, min_size=1, max_size=3),
       slow=st.floats(20.0, 1000.0), data=st.data())
def test_a_crawl_in_shapes_run_healthy_once_is_caught(
        a: float, b: float, c: float, learnt: list[Shape], fresh: list[Shape], slow: float,
        data: st.DataObject) -> None:
    """A shape is known once the shard ran it healthy, even once (a long document after
    a baseline of tiny items, bench/bench_shapes.py's tiny_then_long at 70 %): a deep
    crawl in any mix of known shapes holds the signature within the EMA's lag and a
    window. (A 10x one is caught as fast in the corpus shapes of bench_shapes.py.)"""
    state = healthy_run(a, b, c, learnt)
    for shape in fresh:  # each once, healthy
        state.observe(shape.rows, cost(a, b, c, shape), shape)
    cycle = data.draw(st.lists(st.sampled_from(learnt + fresh), min_size=1, max_size=6))
    assert slowed(state, a, b, c, cycle, slow).crawling


@settings(max_examples=150, deadline=None)
@given(**costs, learnt=st.lists(shapes, min_size=1, max_size=5),
       fresh=st.lists(shapes, min_size=1, max_size=3), before=st.integers(HELD_OVER, 6),
       slow=st.floats(20.0, 1000.0))
def test_a_crawl_under_way_is_not_reset_by_a_shape_never_run(
        a: float, b: float, c: float, learnt: list[Shape], fresh: list[Shape],
        before: int, slow: float) -> None:
    """A crawl that began in known shapes (HELD_OVER batches or more before) goes on into
    shapes the shard never ran (tiny items, then long documents at 50 %; long
    documents, then titles at 30 %): those count as the pace last judged and are not
    learnt, so the signature holds as if the shape had not changed. (Fewer than
    HELD_OVER slow batches before a change of shape could be a pause: that is the
    ambiguous case below.)"""
    state = slowed(healthy_run(a, b, c, learnt), a, b, c, learnt, slow, before)
    assert slowed(state, a, b, c, fresh, slow, CAUGHT - before).crawling


@settings(max_examples=150, deadline=None)
@given(**costs, learnt=st.lists(shapes, min_size=1, max_size=5),
       fresh=st.lists(shapes, min_size=1, max_size=3), meanwhile=st.integers(1, 60),
       before=st.integers(0, HELD_OVER - 1), slow=st.floats(20.0, 1000.0))
def test_a_crawl_that_begins_with_a_shape_never_run_is_caught_when_a_known_one_returns(
        a: float, b: float, c: float, learnt: list[Shape], fresh: list[Shape],
        meanwhile: int, before: int, slow: float) -> None:
    """The one ambiguous case: a slowdown that begins with the first batch of a shape
    never run (or fewer than HELD_OVER batches before it) cannot be told from a healthy
    new shape (which is learnt as it runs). It is caught within the usual count once a
    shape known from before runs again, however long the new shapes ran in between."""
    state = slowed(healthy_run(a, b, c, learnt), a, b, c, learnt, slow, before)
    state = slowed(state, a, b, c, fresh, slow, meanwhile)
    assert slowed(state, a, b, c, learnt, slow).crawling


def test_a_batch_timed_far_too_fast_is_not_learnt() -> None:
    """One batch of a known shape timed at a tenth of its time (a wall-clock step) would
    make every later batch of that shape look ten times slow; it is not learnt from."""
    pages = padded_shape(16, 900)
    state = healthy_run(0.01, 1e-5, 1e-8, [pages])
    state.observe(pages.rows, cost(0.01, 1e-5, 1e-8, pages) / 10, pages)
    slowed(state, 0.01, 1e-5, 1e-8, [pages], 1.0, CAUGHT)
    assert state.ratio is not None and state.ratio > 0.8 and state.streak == 0


def stall_limit(state_dir: Path, t: CrawlTracker, genes: int, shape: Shape | None = None,
                ) -> float:
    """BFMShardStalled's limit for a batch of ``genes`` (of ``shape``) in flight, from the
    gauges the rule reads: WINDOW x FACTOR x bfm_batch_inflight_work / the baseline."""
    flight = t.begin(genes, shape)
    try:
        work = value(state_dir, "bfm_batch_inflight_work")
        base = value(state_dir, "bfm_genes_per_second_baseline")
        assert work is not None and base is not None
        return DET.window * DET.factor * work / base
    finally:
        t.fail(flight, ValueError("only measured"))


def test_the_stall_limit_is_a_window_of_the_batch_s_own_work(state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock)
    chat, pages = (32, 14), (32, 800)
    for _ in range(DET.warmup_batches + DET.baseline_batches):
        with t.batch(genes=32, tokens=32 * 14):
            clock.now += 0.03
    assert t.baseline == pytest.approx(32 / 0.03)
    by_genes = DET.window * DET.factor * 32 / t.baseline  # what the genes rule gave
    chat_limit = stall_limit(state_dir, t, 32, tokens_shape(32, 32 * chat[1]))
    pages_limit = stall_limit(state_dir, t, 32, tokens_shape(32, 32 * pages[1]))
    assert chat_limit == pytest.approx(by_genes, rel=0.05)
    assert pages_limit > 20 * by_genes
    flight = t.begin(32, padded_shape(*pages))
    assert value(state_dir, "bfm_batch_inflight_genes") == 32
    work = value(state_dir, "bfm_batch_inflight_work")
    assert work is not None and work > 20 * 32
    clock.now += 1.5  # the page batch runs 50 times a chat batch's time: no crawl
    t.finish(flight, 32 * 790)
    assert value(state_dir, "bfm_batch_inflight_work") == 0
    assert t.ratio is not None and t.ratio > 1 / DET.factor


def test_a_probe_is_work_without_genes(state_dir: Path) -> None:
    clock = FakeClock()
    t = CrawlTracker("confluence", "backfill", "cuda:0", state_dir=state_dir, clock=clock,
                     env={}, total=64)
    for _ in range(DET.warmup_batches + DET.baseline_batches):
        with t.batch(genes=8, tokens=8 * 100):
            clock.now += 0.1
    done = t.done
    flight = t.begin(0, padded_shape(8, 100))
    assert value(state_dir, "bfm_batch_inflight_genes") == 0
    assert value(state_dir, "bfm_batch_inflight_work") == pytest.approx(8, rel=0.05)
    clock.now += 0.1
    t.finish(flight, 800)
    assert t.done == done and t.batches == DET.warmup_batches + DET.baseline_batches + 1
    line = json.loads(StateDir(state_dir).batches_file("confluence").read_text()
                      .splitlines()[-1])
    assert line["genes"] == 0.0 and line["work"] == pytest.approx(8, rel=0.05)


def test_the_oldest_batch_in_flight_is_the_one_published(state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock)
    first = t.begin(8)
    clock.now += 1
    second = t.begin(16)
    assert value(state_dir, "bfm_batch_inflight_genes") == 8
    assert value(state_dir, "bfm_batch_started_timestamp_seconds") == first.start
    t.observe(genes=4, seconds=0.5)  # another thread's timed batch moves nothing
    assert value(state_dir, "bfm_batch_started_timestamp_seconds") == first.start
    t.finish(first)
    assert value(state_dir, "bfm_batch_inflight_genes") == 16
    assert value(state_dir, "bfm_batch_started_timestamp_seconds") == second.start
    t.fail(second, ValueError("not memory"))
    assert value(state_dir, "bfm_batch_inflight_genes") == 0
    assert value(state_dir, "bfm_batch_inflight_work") == 0
    assert t.batches == 2


def _baseline_path(state_dir: Path) -> Path:
    return StateDir(state_dir).baseline_file("confluence", "backfill", "cuda:0")


def test_the_work_model_survives_a_restart_and_what_it_learns_later(state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock)
    for _ in range(DET.warmup_batches + DET.baseline_batches):
        with t.batch(genes=32, tokens=32 * 100):
            clock.now += 0.2
    saved = json.loads(_baseline_path(state_dir).read_text())
    assert saved["model"] == 2 and saved["unit"] == "tokens"
    # Tiny batches are learnt after the baseline; saved again after a minute.
    for _ in range(5):
        with t.batch(genes=1, tokens=8):
            clock.now += 0.01
    clock.now += 61
    with t.batch(genes=1, tokens=8):
        clock.now += 0.01
    later = json.loads(_baseline_path(state_dir).read_text())
    assert later["envelope"] != saved["envelope"] and later["baseline"] == saved["baseline"]
    relaunched = make(state_dir, clock)
    assert relaunched.baseline == t.baseline
    title = tokens_shape(1, 8)
    assert relaunched._rate.work(title) == pytest.approx(t._rate.work(title))


def test_a_first_release_baseline_is_read_as_its_rate(state_dir: Path) -> None:
    path = _baseline_path(state_dir)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"baseline": 15.3, "samples": [15.3], "unit": "genes",
                                "genes_per_unit": 1.0}))
    t = make(state_dir, FakeClock())
    assert t.baseline == 15.3
    assert stall_limit(state_dir, t, 64) == pytest.approx(8 * 5 * 64 / 15.3)
    path.write_text(json.dumps({"baseline": 900.0, "unit": "tokens", "genes_per_unit": 0.01}))
    assert make(state_dir, FakeClock()).baseline is None  # another unit: measured again


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4), max_leaves=20)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.fixed_dictionaries({"baseline": st.floats(0.1, 100.0), "model": st.just(2),
                                   "unit": st.sampled_from(["genes", "tokens"])},
                                  optional={"envelope": json_values, "batches": json_values}))
def test_any_persisted_work_model_is_loaded_or_ignored(state_dir: Path, junk: Any) -> None:
    path = _baseline_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(junk))
    record = load_baseline_record(StateDir(state_dir), "confluence", "backfill", "cuda:0")
    if record is not None:  # whatever loads can judge a batch
        model = record.work_model()
        if model is not None:
            model.expected_seconds(padded_shape(4, 10))


def test_envelope_round_trips() -> None:
    env = Envelope()
    for rows, longest, seconds in ((32, 100, 0.2), (8, 10, 0.01), (1, 5, 0.005)):
        env.learn(padded_shape(rows, longest), seconds)
    record = EnvelopeRecord.of(env)
    again = EnvelopeRecord.model_validate(json.loads(record.model_dump_json())).envelope()
    for shape in (padded_shape(2, 3), padded_shape(64, 512), padded_shape(8, 12)):
        assert again.predict(shape) == env.predict(shape)
        assert again.known(shape) == env.known(shape)
    for bad in ([], {"fixed": [1, 2]}, {"work": -1.0}, {"quad": 0},
                {"seen": [[1.0, 1.0]] * (MAX_SEEN + 1)}, {"seen": [[1.0]]},
                {"fixed": [0, 1, 1]}):
        with pytest.raises(ValidationError):
            EnvelopeRecord.model_validate(bad)


def test_the_landmarks_are_bounded_and_the_least_recent_is_forgotten() -> None:
    env = Envelope()
    pages, titles = padded_shape(16, 900), padded_shape(1, 8)
    env.learn(pages, 1.0)
    env.learn(titles, 0.002)
    for longest in range(2, 2 + MAX_SEEN - 2):  # shapes 1.25 x apart or more
        env.learn(padded_shape(1, round(8 * 1.3 ** longest)), 1.0)
    env.learn(titles, 0.002)  # met again: the most recent
    env.learn(padded_shape(64, 2048), 5.0)
    assert len(env.seen) == MAX_SEEN
    assert env.known(titles) and not env.known(pages)


def _batch(**kw: Any) -> Batch:
    base = dict(t=100.0, stage="backfill", device="cuda:0", gpu="0", pid=1, genes=32.0,
                seconds=2.0, rate=16.0, ema=None, baseline=1000.0, streak=0, factor=5.0)
    return Batch(**{**base, **kw})  # type: ignore[arg-type]


def test_slow_and_lost_time_are_judged_in_work() -> None:
    # 32 pages worth 2,000 gene-equivalents take 2 s at a baseline of 1,000 genes/s:
    # on pace, however few genes they are.
    pages = _batch(work=2000.0)
    assert pages.expected_seconds == 2.0 and not pages.slow and pages.lost_seconds == 0
    assert _batch().slow and _batch().lost_seconds == pytest.approx(2.0 - 0.032)
    crawling = _batch(work=2000.0, seconds=20.0)
    assert crawling.slow and crawling.lost_seconds == pytest.approx(18.0)
    assert crawling.healthy_seconds == 2.0 and pages.healthy_seconds == 2.0


def test_the_eta_is_computed_from_work(tmp_path: Path) -> None:
    path = tmp_path / "batches.jsonl"
    lines = [{"v": 1, "stage": "backfill", "device": "cuda:0", "gpu": "0", "pid": 7,
              "factor": 5.0, "t": 100.0 + i, "genes": 32.0, "seconds": seconds,
              "rate": 32 / seconds, "ema": None, "baseline": 1000.0, "streak": 0,
              "work": work, "total": 320, "remaining": 320.0 - 32 * (i + 1)}
             for i, (seconds, work) in enumerate([(0.032, 32.0), (2.0, 2000.0)] * 2)]
    path.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    tail = BatchTail(path)
    tail.poll()
    assert tail.paced_genes == 128 and tail.paced_seconds == pytest.approx(4.064)
    # 192 genes left at 4.064 s per 128 genes: 6.1 s, not 192 / 1,000 genes/s.
    assert eta_seconds(tail.last, tail.paced_seconds, tail.paced_genes) == \
        pytest.approx(192 * 4.064 / 128)
