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
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from crawlguard.gpu.vram import TorchSource, VramSource
from crawlguard.kernel import oom
from crawlguard.kernel.devices import gpu_label, parse_device, physical_gpu
from crawlguard.kernel.errors import ConfigError, StateError, VramError
from crawlguard.kernel.formats.batchlog import BatchWriter
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.settings import Detection, state_dir_from_env
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import register_worker

from . import catalog
from .baseline import Unit, load_baseline_record, save_baseline
from .mpfiles import SeriesWriter
from .rate import RateState, Verdict

Clock = Callable[[], float]
TORCH_READ_INTERVAL_S = 1.0
"""torch.cuda.mem_get_info synchronises with the device; once a second is plenty."""


class CrawlTracker:
    """Rate tracker of one (shard, stage, device) in one worker process."""

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
        self.state = StateDir(state_dir if state_dir is not None else state_dir_from_env(env))
        self._clock = clock
        persisted = load_baseline_record(self.state, self.shard, self.stage, self.device)
        self._rate = RateState(self.detection,
                               baseline=None if persisted is None else persisted.baseline)
        # Throughput is judged in "units": non-padding tokens when the batches
        # carry them (length-sorted encodes), else genes. Published rates stay
        # genes/s: the EMA and baseline are scaled by the baseline batches' genes
        # per unit, so EMA/baseline (what the rules judge) is the unit-free ratio.
        self._persisted_unit = None if persisted is None else persisted.unit
        self._unit: Unit | None = None
        self._scale = 1.0 if persisted is None else persisted.genes_per_unit
        self._scale_genes = 0.0
        self._scale_units = 0.0
        self.total = total
        self.done = 0.0
        self._oom_pending = False
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
        # The knobs and the idle in-flight pair are written once; batch() and
        # observe() rewrite only what a batch changes.
        initial = {
            "bfm_crawl_factor": self.detection.factor,
            "bfm_crawl_window_batches": float(self.detection.window),
            "bfm_shared_min_bytes": float(self.detection.shared_min_bytes),
            "bfm_crawl_streak_batches": 0.0,
            "bfm_batch_inflight_genes": 0.0,
            "bfm_batch_started_timestamp_seconds": 0.0,
        }
        if self._rate.baseline is not None:  # persisted by an earlier worker
            initial["bfm_genes_per_second_baseline"] = self._rate.baseline * self._scale
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
        """The baseline in genes/s (for token-judged batches: at the baseline's genes/token)."""
        b = self._rate.baseline
        return None if b is None else b * self._scale

    @property
    def ema(self) -> float | None:
        e = self._rate.ema
        return None if e is None else e * self._scale

    @property
    def unit(self) -> Unit:
        """What throughput is judged in: ``tokens`` (non-padding) or ``genes``."""
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
        start = self.begin(genes)
        try:
            yield
        except BaseException as exc:
            self.fail(genes, exc)
            raise
        self.finish(genes, start, tokens)

    def observe(self, genes: float, seconds: float, tokens: float | None = None) -> Verdict:
        """Record a batch the build timed itself."""
        start = self._clock() - seconds
        return self._record(genes, seconds, start,
                            {"bfm_batch_started_timestamp_seconds": start}, tokens)

    def instrument(self, model: Any) -> Any:
        """Observe every forward pass of ``model`` as one batch (``exporter.instrument``)."""
        from .instrument import instrument

        return instrument(self, model)

    def close(self) -> None:
        self._log.close()

    # -- a batch in three steps (batch() and instrument() share them) ----------
    def begin(self, genes: float) -> float:
        """A batch of ``genes`` starts now: publish it as in flight; its start time."""
        start = self._clock()
        self._writer.set_many({"bfm_batch_started_timestamp_seconds": start,
                               "bfm_batch_inflight_genes": float(genes)})
        return start

    def finish(self, genes: float, start: float, tokens: float | None = None,
               cost: float | None = None) -> Verdict:
        """The batch begun at ``start`` finished now; ``cost``: its tokens weighted
        by length (``crawlguard.exporter.instrument.work``), judged instead of ``tokens``."""
        return self._record(genes, max(self._clock() - start, 0.0), start,
                            {"bfm_batch_inflight_genes": 0.0}, tokens, cost)

    def fail(self, genes: float, exc: BaseException) -> None:
        """The batch raised ``exc``: clear the in-flight pair; record an OOM."""
        if oom.is_oom(exc):
            self._record_oom(genes, exc)
        self._writer.set_many({"bfm_batch_inflight_genes": 0.0})

    # -- internals ------------------------------------------------------------
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
            self._rate.baseline = None
            self._scale = 1.0

    def _record(self, genes: float, seconds: float, start: float,
                extra: dict[str, float], tokens: float | None = None,
                cost: float | None = None) -> Verdict:
        # Plain floats from here on: numpy scalars would print as np.float64(...).
        genes, seconds = float(genes), float(seconds)
        if self._unit is None:
            self._judge_unit("genes" if tokens is None else "tokens")
        if self._unit == "tokens":
            # A batch without tokens in a token-judged tracker: estimate them.
            work = (float(cost) if cost is not None else float(tokens) if tokens is not None
                    else genes / self._scale)
        else:
            work = genes
        establishing = self._rate.baseline is None
        verdict = self._rate.observe(work, seconds)
        if establishing and self._rate.batches > self.detection.warmup_batches and work > 0:
            self._scale_genes += genes
            self._scale_units += work
            self._scale = self._scale_genes / self._scale_units
        scale = self._scale
        if verdict.baseline_established and verdict.baseline is not None:
            # On failure the baseline still holds in memory; a restart re-measures it.
            with contextlib.suppress(StateError):
                save_baseline(self.state, self.shard, self.stage, self.device,
                              verdict.baseline, list(self._rate.baseline_samples),
                              unit=self.unit, genes_per_unit=scale)
        # Only what changed: a batch is a handful of mmap stores (bench_observe.py).
        rate = genes / max(seconds, 1e-6)
        extra["bfm_genes_per_second"] = rate
        if verdict.ema is not None:
            extra["bfm_genes_per_second_ema"] = verdict.ema * scale
        if verdict.streak != self._published_streak:
            extra["bfm_crawl_streak_batches"] = float(verdict.streak)
            self._published_streak = verdict.streak
        if verdict.baseline_established and verdict.baseline is not None:
            extra["bfm_genes_per_second_baseline"] = verdict.baseline * scale
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
            start + seconds, genes, seconds, rate,
            None if verdict.ema is None else verdict.ema * scale,
            None if verdict.baseline is None else verdict.baseline * scale, verdict.streak,
            tokens=tokens, total=self.total,
            remaining=None if self.total is None else max(self.total - self.done, 0.0))
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
