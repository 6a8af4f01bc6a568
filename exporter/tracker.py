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

from crawlguard.devices import gpu_label, parse_device, physical_gpu
from crawlguard.errors import StateError, VramError
from crawlguard.formats.batchlog import BatchWriter
from crawlguard.names import ShardName
from crawlguard.settings import Detection, state_dir_from_env
from crawlguard.statedir import StateDir
from crawlguard.workers import register_worker

from . import catalog
from .baseline import load_baseline, save_baseline
from .mpfiles import SeriesWriter
from .rate import RateState, Verdict
from .vram import TorchSource, VramSource

Clock = Callable[[], float]
TORCH_READ_INTERVAL_S = 1.0
"""torch.cuda.mem_get_info synchronises with the device; once a second is plenty."""


class CrawlTracker:
    """Rate tracker of one (shard, stage, device) in one worker process."""

    def __init__(self, shard: str, stage: str = "backfill", device: str = "cuda:0", *,
                 state_dir: str | os.PathLike[str] | None = None,
                 detection: Detection | None = None, clock: Clock = time.time,
                 env: Mapping[str, str] | None = None,
                 memory: VramSource | None = None) -> None:
        env = os.environ if env is None else env
        self.shard = ShardName.parse(shard)
        self.stage = ShardName.parse(stage, "stage")
        self.device = parse_device(device)
        self.gpu = physical_gpu(self.device, env)
        self.detection = detection or Detection.from_env(env)
        self.state = StateDir(state_dir if state_dir is not None else state_dir_from_env(env))
        self._clock = clock
        self._rate = RateState(self.detection,
                               baseline=load_baseline(self.state, self.shard, self.stage,
                                                      self.device))
        self.state.ensure()  # a state dir crawlguard creates is mode 0700
        register_worker(self.state, self.shard)
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
            initial["bfm_genes_per_second_baseline"] = self._rate.baseline
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
        return self._rate.baseline

    @property
    def ema(self) -> float | None:
        return self._rate.ema

    @property
    def streak(self) -> int:
        return self._rate.streak

    @property
    def batches(self) -> int:
        return self._rate.batches

    def stall_limit(self, genes: float) -> float | None:
        return self._rate.stall_limit(genes)

    # -- what the build calls -------------------------------------------------
    @contextmanager
    def batch(self, genes: int) -> Iterator[None]:
        """Time the body as one batch of ``genes``; it is in flight meanwhile.

        A body that raises is not a finished batch: nothing is observed, and the
        in-flight gauges are cleared so a failed batch cannot look stalled.
        """
        if genes < 0:
            raise ValueError(f"genes must be >= 0, got {genes!r}")
        start = self._clock()
        self._writer.set_many({"bfm_batch_started_timestamp_seconds": start,
                               "bfm_batch_inflight_genes": float(genes)})
        try:
            yield
        except BaseException:
            self._writer.set_many({"bfm_batch_inflight_genes": 0.0})
            raise
        self._record(genes, max(self._clock() - start, 0.0), start,
                     {"bfm_batch_inflight_genes": 0.0})

    def observe(self, genes: float, seconds: float) -> Verdict:
        """Record a batch the build timed itself."""
        start = self._clock() - seconds
        return self._record(genes, seconds, start,
                            {"bfm_batch_started_timestamp_seconds": start})

    def close(self) -> None:
        self._log.close()

    # -- internals ------------------------------------------------------------
    def _record(self, genes: float, seconds: float, start: float,
                extra: dict[str, float]) -> Verdict:
        # Plain floats from here on: numpy scalars would print as np.float64(...).
        genes, seconds = float(genes), float(seconds)
        verdict = self._rate.observe(genes, seconds)
        if verdict.baseline_established and verdict.baseline is not None:
            # On failure the baseline still holds in memory; a restart re-measures it.
            with contextlib.suppress(StateError):
                save_baseline(self.state, self.shard, self.stage, self.device,
                              verdict.baseline, list(self._rate.baseline_samples))
        # Only what changed: a batch is a handful of mmap stores (bench_observe.py).
        extra["bfm_genes_per_second"] = verdict.rate
        if verdict.ema is not None:
            extra["bfm_genes_per_second_ema"] = verdict.ema
        if verdict.streak != self._published_streak:
            extra["bfm_crawl_streak_batches"] = float(verdict.streak)
            self._published_streak = verdict.streak
        if verdict.baseline_established and verdict.baseline is not None:
            extra["bfm_genes_per_second_baseline"] = verdict.baseline
        if self._torch is not None:
            self._torch_memory(extra)
        self._writer.record({"bfm_genes": float(genes), "bfm_batches": 1.0}, extra)
        self._log.append(start + seconds, genes, seconds, verdict.rate, verdict.ema,
                         verdict.baseline, verdict.streak)
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
