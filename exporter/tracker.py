"""``CrawlTracker``: the build-side API (DESIGN.md, "Build-side API").

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

from crawlguard.errors import StateError, VramError
from crawlguard.settings import Detection, state_dir_from_env
from crawlguard.statedir import StateDir, gpu_label, safe_device, safe_name
from crawlguard.workers import register_worker

from . import catalog
from .baseline import load_baseline, save_baseline
from .mpfiles import SeriesWriter
from .rate import RateState, Verdict
from .vram import TorchSource, VramSource

Clock = Callable[[], float]
TORCH_READ_INTERVAL_S = 1.0
"""torch.cuda.mem_get_info synchronises with the device; once a second is plenty."""


def physical_gpu(device: str, env: Mapping[str, str]) -> str:
    """The ``gpu`` label: NVML's index, mapping through CUDA_VISIBLE_DEVICES.

    torch's ``cuda:0`` is the first *visible* GPU; NVML (and so the VRAM
    series) index all GPUs. When CUDA_VISIBLE_DEVICES lists plain indices the
    label follows it; UUIDs cannot be mapped without NVML, so they are kept as
    the torch index (documented in docs/architecture.md).
    """
    index = gpu_label(device)
    visible = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not index or not visible:
        return index
    parts = [p.strip() for p in visible.split(",")]
    i = int(index)
    if i < len(parts) and parts[i].isdigit():
        return parts[i]
    return index


class CrawlTracker:
    """Rate tracker of one (shard, stage, device) in one worker process."""

    def __init__(self, shard: str, stage: str = "backfill", device: str = "cuda:0", *,
                 state_dir: str | os.PathLike[str] | None = None,
                 detection: Detection | None = None, clock: Clock = time.time,
                 env: Mapping[str, str] | None = None, register: bool = True) -> None:
        env = os.environ if env is None else env
        self.shard = safe_name(shard)
        self.stage = safe_name(stage, "stage")
        self.device = safe_device(device)
        self.gpu = physical_gpu(self.device, env)
        self.detection = detection or Detection.from_env(env)
        self.state = StateDir(state_dir if state_dir is not None else state_dir_from_env(env))
        self._clock = clock
        self._rate = RateState(self.detection,
                               baseline=load_baseline(self.state, self.shard, self.stage,
                                                      self.device))
        if register:
            self.state.ensure()  # a state dir crawlguard creates is mode 0700
            register_worker(self.state, self.shard)
        # torch's own view of the worker's GPU, only if the build imported torch: the
        # tracker never imports it (seconds of start-up and a CUDA context).
        self._torch: VramSource | None = (
            TorchSource() if self.gpu and "torch" in sys.modules else None)
        self._torch_read_at = float("-inf")
        self._writer = SeriesWriter(
            self.state.metrics_dir, catalog.WORKER_LABELS,
            (self.shard, self.stage, self.device, self.gpu),
            catalog.WORKER_COUNTERS, catalog.WORKER_GAUGES)
        self._log_fd: int | None = None
        # Names are validated (no quotes or backslashes), so plain interpolation is JSON.
        self._log_format = (
            f'{{"stage":"{self.stage}","device":"{self.device}","gpu":"{self.gpu}",'
            f'"pid":{os.getpid()},"factor":{self.detection.factor!r},'
            '"t":%.3f,"genes":%r,"seconds":%r,"rate":%r,"ema":%s,"baseline":%s,"streak":%d}\n')
        # The knobs and the idle in-flight pair are written once; batch() and
        # observe() rewrite only what a batch changes.
        initial = {
            "bfm_crawl_factor": self.detection.factor,
            "bfm_crawl_window_batches": float(self.detection.window),
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
        if self._log_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._log_fd)
            self._log_fd = None

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
        self._append_log(genes, seconds, start, verdict)
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

    def _append_log(self, genes: float, seconds: float, start: float, v: Verdict) -> None:
        if self._log_fd is None:
            try:
                path = self.state.batches_file(self.shard)
                path.parent.mkdir(parents=True, exist_ok=True)
                # O_APPEND + one os.write per line: atomic appends, no buffer to
                # lose on SIGKILL, and the cheapest write Python offers.
                self._log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError:
                return
        # %-formatting into a prepared template: json.dumps would dominate observe().
        line = self._log_format % (start + seconds, genes, seconds, v.rate, _num(v.ema),
                                   _num(v.baseline), v.streak)
        with contextlib.suppress(OSError):
            os.write(self._log_fd, line.encode())


def _num(value: float | None) -> str:
    return "null" if value is None else repr(value)
