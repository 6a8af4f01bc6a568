"""``CrawlTracker``: the build-side API (docs/integration.md, step 1).

    tracker = CrawlTracker(shard="confluence", stage="backfill", device="cuda:0")
    with tracker.batch(genes=len(batch)):
        embed(batch)
    tracker.observe(genes=64, seconds=4.2)   # for already-timed batches
    tracker.crawling                          # the rate signature holds

Creating a tracker validates the knobs, registers this process as the worker
of the shard, and loads the shard's persisted baseline. Each finished batch
updates the rate state (``rate.RateState``), writes the worker series into the
multiprocess files the exporter serves, and appends one line to the shard's
``batches.jsonl`` (the evidence ``crawlguard report`` charts).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

from crawlguard.gpu.vram import TorchSource, VramSource
from crawlguard.kernel import oom
from crawlguard.kernel.devices import gpu_label, parse_device, physical_gpu
from crawlguard.kernel.errors import ConfigError, StateError, VramError
from crawlguard.kernel.formats.batchlog import BatchWriter
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.settings import Detection, state_dir_established, state_dir_from_env
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import register_worker

from . import catalog
from .baseline import Unit, load_baseline_record, save_baseline
from .mpfiles import SeriesWriter
from .rate import RateState, Verdict
from .workmodel import Shape, genes_shape, tokens_shape

Clock = Callable[[], float]
TORCH_READ_INTERVAL_S = 1.0
"""torch.cuda.mem_get_info synchronises with the device; once a second is plenty."""
BASELINE_SAVE_INTERVAL_S = 60.0
"""The work model learns after the baseline (workmodel); what it learnt is saved at most
this often, so a relaunched worker starts from it."""


class Flight(NamedTuple):
    """A batch in flight: what ``begin`` returns and ``finish``/``fail`` take."""

    key: int
    start: float
    genes: float
    shape: Shape
    expected: float | None
    """Its seconds at the baseline's pace, as predicted when it began (None before)."""


class CrawlTracker:
    """Rate tracker of one (shard, stage, device) in one worker process.

    Thread-safe: batches of several threads (one model encoding in two threads)
    are each observed once; the oldest batch in flight is the one published.
    """

    def __init__(self, shard: str, stage: str = "backfill", device: str = "cuda:0", *,
                 state_dir: str | os.PathLike[str] | None = None,
                 detection: Detection | None = None, clock: Clock = time.time,
                 env: Mapping[str, str] | None = None,
                 memory: VramSource | None = None, total: int | None = None) -> None:
        env = os.environ if env is None else env
        if total is not None and (isinstance(total, bool) or not isinstance(total, int)
                                  or total < 0):
            raise ConfigError("total", total, "must be a whole number of genes >= 0")
        self.shard = ShardName.parse(shard)
        self.stage = ShardName.parse(stage, "stage")
        self.device = parse_device(device)
        self.gpu = physical_gpu(self.device, env)
        self.detection = detection or Detection.from_env(env)
        self.state = StateDir(state_dir if state_dir is not None else state_dir_from_env(env),
                              create=not state_dir_established(env))
        self._clock = clock
        persisted = load_baseline_record(self.state, self.shard, self.stage, self.device)
        self._rate = RateState(self.detection,
                               baseline=None if persisted is None else persisted.work_model())
        # Batches are judged by their shape (workmodel): padded tokens when they carry
        # an attention mask, else genes. The unit is fixed by the first batch; a
        # persisted baseline in the other unit is dropped.
        self._persisted_unit = None if persisted is None else persisted.unit
        self._unit: Unit | None = None
        self._token_sums = [0.0, 0.0, 0.0]  # rows, tokens, quad of the token batches
        self._saved_learnt = self._rate.learnt
        self._saved_at = clock()
        self.total = total
        self.done = 0.0
        self._oom_pending = False
        self._lock = threading.Lock()
        self._flights: dict[int, Flight] = {}
        self._keys = itertools.count()
        self._published: int | None = None  # the key of the flight the gauges show
        self.state.ensure()  # a state dir crawlguard creates is mode 0700
        self.identity_key = register_worker(self.state, self.shard).identity.key
        # torch's own view of the worker's GPU, only if the build imported torch: the
        # tracker never imports it (seconds of start-up and a CUDA context). ``memory``
        # stands in for it where there is no real GPU (the reference rebuild's simulation).
        self._torch: VramSource | None = (
            None if not self.gpu else memory if memory is not None
            else TorchSource() if "torch" in sys.modules else None)
        self._torch_read_at = float("-inf")
        self._writer = SeriesWriter(
            self.state.metrics_dir, catalog.WORKER_LABELS,
            (self.shard, self.stage, self.device, self.gpu),
            catalog.WORKER_COUNTERS, catalog.WORKER_GAUGES)
        self._log = BatchWriter(self.state.batches_file(self.shard), stage=self.stage,
                                device=self.device, gpu=self.gpu, pid=os.getpid(),
                                factor=self.detection.factor)
        # The knobs and the idle in-flight triple are written once; batch() and
        # observe() rewrite only what a batch changes.
        initial = {
            "bfm_crawl_factor": self.detection.factor,
            "bfm_crawl_window_batches": float(self.detection.window),
            "bfm_shared_min_bytes": float(self.detection.shared_min_bytes),
            "bfm_crawl_streak_batches": 0.0,
            "bfm_batch_inflight_genes": 0.0,
            "bfm_batch_inflight_work": 0.0,
            "bfm_batch_started_timestamp_seconds": 0.0,
        }
        if self._rate.baseline_rate is not None:  # persisted by an earlier worker
            initial["bfm_genes_per_second_baseline"] = self._rate.baseline_rate
        if total is not None:
            initial["bfm_genes_remaining"] = float(total)
        self._published_streak = 0
        self._writer.set_many(initial)

    def __repr__(self) -> str:
        return (f"CrawlTracker(shard={self.shard!r}, stage={self.stage!r}, "
                f"device={self.device!r}, baseline={self.baseline!r}, streak={self.streak})")

    # -- what the build reads -------------------------------------------------
    @property
    def crawling(self) -> bool:
        """The rate signature holds: EMA below baseline/factor for a whole window."""
        return self._rate.crawling

    @property
    def baseline(self) -> float | None:
        """The baseline in genes/s (the median genes/s of the baseline batches)."""
        return self._rate.baseline_rate

    @property
    def ema(self) -> float | None:
        """The EMA in genes/s: the judged ratio (pace / baseline pace) x the baseline."""
        return self._rate.ema

    @property
    def ratio(self) -> float | None:
        """EMA / baseline: the unit-free ratio the rules judge (None before the baseline)."""
        return self._rate.ratio if self._rate.model is not None else None

    @property
    def unit(self) -> Unit:
        """What a batch's shape is made of: ``tokens`` (padded, from the mask) or ``genes``."""
        return self._unit or "genes"

    @property
    def remaining(self) -> float | None:
        """Genes of ``total`` not yet embedded by this tracker; None without a total."""
        return None if self.total is None else max(self.total - self.done, 0.0)

    @property
    def streak(self) -> int:
        return self._rate.streak

    @property
    def batches(self) -> int:
        return self._rate.batches

    # -- what the build calls -------------------------------------------------
    @contextmanager
    def batch(self, genes: int, tokens: int | None = None) -> Iterator[None]:
        """Time the body as one batch of ``genes`` (and ``tokens`` non-padding
        tokens, when known); it is in flight meanwhile.

        A body that raises is not a finished batch: nothing is observed, and the
        in-flight gauges are cleared so a failed batch cannot look stalled. An
        out-of-memory error is recorded (``crawlguard.kernel.oom``) before it propagates.
        """
        if genes < 0:
            raise ValueError(f"genes must be >= 0, got {genes!r}")
        flight = self.begin(genes, None if tokens is None else tokens_shape(genes, tokens))
        try:
            yield
        except BaseException as exc:
            self.fail(flight, exc)
            raise
        self.finish(flight, tokens)

    def observe(self, genes: float, seconds: float, tokens: float | None = None) -> Verdict:
        """Record a batch the build timed itself."""
        with self._lock:
            shape = self._shape(genes, None if tokens is None else tokens_shape(genes, tokens))
            start = self._clock() - seconds
            # The start gauge belongs to a batch in flight (another thread's), if any.
            extra = {} if self._flights else {"bfm_batch_started_timestamp_seconds": start}
            return self._record(genes, seconds, start, shape, extra, tokens)

    def instrument(self, model: Any) -> Any:
        """Observe every forward pass of ``model`` as one batch (``exporter.instrument``)."""
        from .instrument import instrument

        return instrument(self, model)

    def close(self) -> None:
        self._log.close()

    # -- a batch in three steps (batch() and instrument() share them) ----------
    def begin(self, genes: float, shape: Shape | None = None) -> Flight:
        """A batch of ``genes`` (of ``shape``, when its tokens are known) starts now:
        publish it as in flight unless an older one is."""
        with self._lock:
            shape = self._shape(genes, shape)
            flight = Flight(next(self._keys), self._clock(), float(genes), shape,
                            self._rate.expected_seconds(shape))
            self._flights[flight.key] = flight
            if self._published is None:
                self._published = flight.key
                self._writer.set_many(self._flight_gauges(flight))
            return flight

    def finish(self, flight: Flight, tokens: float | None = None) -> Verdict:
        """The batch ``flight`` finished now; ``tokens``: its non-padding tokens."""
        with self._lock:
            extra = self._land(flight)
            return self._record(flight.genes, max(self._clock() - flight.start, 0.0),
                                flight.start, flight.shape, extra, tokens, flight.expected)

    def fail(self, flight: Flight, exc: BaseException) -> None:
        """The batch raised ``exc``: it is no longer in flight; record an OOM."""
        with self._lock:
            extra = self._land(flight)
            if oom.is_oom(exc):
                self._record_oom(flight.genes, exc)
            self._writer.set_many(extra)

    # -- internals ------------------------------------------------------------
    def _flight_gauges(self, flight: Flight) -> dict[str, float]:
        base = self._rate.baseline_rate
        return {"bfm_batch_started_timestamp_seconds": flight.start,
                "bfm_batch_inflight_genes": flight.genes,
                # Before the baseline there is no pace: genes stand in (no rule reads it).
                "bfm_batch_inflight_work": flight.genes if flight.expected is None or base is None
                else flight.expected * base}

    def _land(self, flight: Flight) -> dict[str, float]:
        """Take ``flight`` out of the air; the in-flight gauges that now change."""
        self._flights.pop(flight.key, None)
        if self._published != flight.key:
            return {}
        if self._flights:  # the oldest batch still in the air is the one shown now
            oldest = min(self._flights.values(), key=lambda f: f.start)
            self._published = oldest.key
            return self._flight_gauges(oldest)
        self._published = None
        return {"bfm_batch_inflight_genes": 0.0, "bfm_batch_inflight_work": 0.0}

    def _shape(self, genes: float, shape: Shape | None) -> Shape:
        """The shape a batch is judged by, in this tracker's unit (fixed by its first)."""
        unit: Unit = "genes" if shape is None else "tokens"
        if self._unit is None:
            self._judge_unit(unit)
        if unit == self._unit and shape is not None:
            return shape
        rows, tokens, quad = self._token_sums
        if self._unit == "tokens" and rows > 0:
            # A batch without tokens in a token-judged tracker: the mean shape so far.
            return Shape(float(genes), genes * tokens / rows, genes * quad / rows)
        return genes_shape(genes)

    def _record_oom(self, genes: float, exc: BaseException) -> None:
        """Make the OOM durable before the exception can kill the process."""
        key = self.identity_key
        pid, _, ms = key.partition("-")
        # Neither a full disk nor a batch size the schema refuses (NaN) may replace the OOM.
        with contextlib.suppress(StateError, OSError, ValueError):
            oom.write_record(self.state, oom.OomRecord(
                shard=self.shard, stage=self.stage, device=self.device, gpu=self.gpu,
                pid=int(pid), create_time=int(ms) / 1000, at=time.time(), genes=float(genes),
                error=f"{type(exc).__name__}: {exc}"[:500]))
        self._oom_pending = True
        self._writer.record({"bfm_oom_batches": 1.0}, {})

    def _judge_unit(self, unit: Unit) -> None:
        """Fix the unit on the first batch; a persisted baseline in another unit is dropped."""
        self._unit = unit
        if self._persisted_unit is not None and self._persisted_unit != unit:
            self._rate = RateState(self.detection)
            self._saved_learnt = self._rate.learnt

    def _record(self, genes: float, seconds: float, start: float, shape: Shape,
                extra: dict[str, float], tokens: float | None = None,
                expected: float | None = None) -> Verdict:
        # Plain floats from here on: numpy scalars would print as np.float64(...).
        genes, seconds = float(genes), float(seconds)
        if self._unit == "tokens":
            sums = self._token_sums
            sums[0] += shape.rows
            sums[1] += shape.tokens
            sums[2] += shape.quad
        verdict = self._rate.observe(genes, seconds, shape, expected)
        model = self._rate.model
        if model is not None and (verdict.baseline_established or (
                self._rate.learnt != self._saved_learnt
                and start - self._saved_at >= BASELINE_SAVE_INTERVAL_S)):
            # On failure the baseline still holds in memory; a restart re-measures it.
            with contextlib.suppress(StateError):
                save_baseline(self.state, self.shard, self.stage, self.device, model,
                              self.unit)
            self._saved_learnt, self._saved_at = self._rate.learnt, start
        # Only what changed: a batch is a handful of mmap stores (bench_observe.py).
        rate = verdict.rate
        extra["bfm_genes_per_second"] = rate
        if verdict.ema is not None:
            extra["bfm_genes_per_second_ema"] = verdict.ema
        if verdict.streak != self._published_streak:
            extra["bfm_crawl_streak_batches"] = float(verdict.streak)
            self._published_streak = verdict.streak
        if verdict.baseline_established and verdict.baseline is not None:
            extra["bfm_genes_per_second_baseline"] = verdict.baseline
        amounts = {"bfm_genes": genes, "bfm_batches": 1.0}
        if tokens is not None:
            amounts["bfm_tokens"] = float(tokens)
            extra["bfm_tokens_per_second"] = float(tokens) / max(seconds, 1e-6)
        self.done += genes
        if self.total is not None:
            extra["bfm_genes_remaining"] = max(self.total - self.done, 0.0)
        if self._torch is not None:
            self._torch_memory(extra)
        self._writer.record(amounts, extra)
        if self._oom_pending:
            self._oom_pending = False
            with contextlib.suppress(StateError, OSError):
                oom.mark_recovered(self.state, self.shard, self.identity_key)
        self._log.append(
            start + seconds, genes, seconds, rate, verdict.ema, verdict.baseline,
            verdict.streak, tokens=tokens, total=self.total,
            remaining=None if self.total is None else max(self.total - self.done, 0.0),
            work=verdict.work)
        return verdict

    def _torch_memory(self, out: dict[str, float]) -> None:
        """Add torch's reserved/allocated bytes, at most once a second of the clock."""
        now = self._clock()
        if now - self._torch_read_at < TORCH_READ_INTERVAL_S or self._torch is None:
            return
        self._torch_read_at = now
        index = int(gpu_label(self.device))  # torch's index, not the NVML one
        try:
            gpus = {g.index: g for g in self._torch.read()}
        except VramError:
            self._torch = None  # no CUDA after all: stop asking
            return
        gpu = gpus.get(index)
        if gpu is not None and gpu.reserved_bytes is not None:
            out["bfm_worker_vram_reserved_bytes"] = float(gpu.reserved_bytes)
            out["bfm_worker_vram_allocated_bytes"] = float(gpu.allocated_bytes or 0)
