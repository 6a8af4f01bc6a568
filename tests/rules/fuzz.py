"""Seeded random scenarios that sit on the thresholds, for the dense parity test.

Every value is chosen around a boundary of a rule (EMA exactly at
baseline / factor, streak at window - 1 / window, used / total at the full
ratio, a batch in flight exactly as long as the stall threshold), with missing
samples (the lookback keeps the previous one) and exporter outages (every
series stale, then missing). Nobody writes expectations for these: promtool is
asked whether Prometheus agrees with the evaluator at every minute.
"""

from __future__ import annotations

import math
import random

from .scenarios import SHARED_MIN, TARGET, WIN_INSTANCE, WIN_JOB, Scenario, Worker, at, selector

MINUTES = 20


def _fmt(v: float) -> str:
    return repr(float(v))


def random_scenario(rng: random.Random, idx: int) -> Scenario:
    workers = [Worker(f"r{idx}a", device="cuda:0", gpu="0", pid="11"),
               Worker(f"r{idx}b", device="cuda:1", gpu="1", pid="12"),
               Worker(f"r{idx}c", device="cpu", gpu="", pid="13")]
    outage = set()
    if rng.random() < 0.4:
        start = rng.randrange(3, MINUTES - 3)
        outage = set(range(start, start + rng.randrange(1, 8)))
    rows: dict[str, list[str]] = {}

    def put(sel: str, minute: int, value: str) -> None:
        if minute in outage:
            value = "stale" if minute - 1 not in outage else "_"
        elif rng.random() < 0.05:
            value = "_"  # a missed scrape: the lookback serves the previous sample
        rows.setdefault(sel, []).append(value)

    for w in workers:
        lab = w.labels()
        baseline = rng.choice([15.3, 15.0, 3.2, 4.0])
        factor = rng.choice([5.0, 5.0, 3.0, 2.5])
        window = rng.choice([8, 8, 4, 1])
        no_baseline_until = rng.choice([0, 0, 0, 5])
        for m in range(MINUTES + 1):
            t = m * 60.0
            edge = baseline / factor
            ema = rng.choice([edge * 0.5, edge * 0.999, edge, baseline * (1 / factor),
                              math.nextafter(edge, 0.0), math.nextafter(edge, math.inf),
                              edge * 1.001, edge * 2.0, edge * 5.0])
            streak = rng.choice([0, window - 1, window, window + 3])
            inflight = rng.choice([0.0, 32.0, 64.0])
            # The work of the batch in flight: absent (an earlier release: its genes
            # stand in), as many as its genes, a long batch's, or a probe's (no genes).
            work = rng.choice([None, inflight, inflight * 50, 64.0 if inflight == 0 else 0.0])
            judged = inflight if work is None else work
            threshold = window * factor * max(judged, 1.0) / baseline
            started = t - threshold * rng.choice([0.0, 0.5, 0.999, 1.0, 1.001, 3.0])
            put(selector("bfm_genes_per_second_ema", lab), m, _fmt(ema))
            put(selector("bfm_crawl_streak_batches", lab), m, _fmt(streak))
            put(selector("bfm_crawl_factor", lab), m, _fmt(factor))
            put(selector("bfm_crawl_window_batches", lab), m, _fmt(window))
            put(selector("bfm_batch_inflight_genes", lab), m, _fmt(inflight))
            put(selector("bfm_batch_inflight_work", lab), m, "_" if work is None else _fmt(work))
            put(selector("bfm_batch_started_timestamp_seconds", lab), m, _fmt(started))
            put(selector("bfm_batches_total", lab), m, _fmt(m))
            put(selector("bfm_genes_per_second_baseline", lab), m,
                _fmt(baseline) if m >= no_baseline_until else "_")
            # Spill evidence other than NVML's ratio, on the thresholds.
            put(selector("bfm_worker_info", w.info_labels()), m, "1")
            put(selector("bfm_shared_min_bytes", lab), m, _fmt(SHARED_MIN))
            put(selector("bfm_worker_shared_memory_bytes", lab), m,
                rng.choice(["_", "_", _fmt(0), _fmt(SHARED_MIN - 1), _fmt(SHARED_MIN)]))
            put(selector("bfm_worker_vram_reserved_bytes", lab), m,
                rng.choice(["_", _fmt(99), _fmt(100), _fmt(101)]))
            for phys in ("0", "1"):
                put(selector("windows_gpu_process_memory_shared_bytes",
                             {"instance": WIN_INSTANCE, "job": WIN_JOB, "process_id": w.pid,
                              "luid": "0x0_0x1", "phys": phys}), m,
                    rng.choice(["_", "_", _fmt(0), _fmt(SHARED_MIN / 2)]))
    for gpu in ("0", "1"):
        lab = {"gpu": gpu, **TARGET}
        full = rng.choice([0.95, 0.95, 0.9])
        for m in range(MINUTES + 1):
            put(selector("bfm_vram_used_bytes", lab), m,
                _fmt(rng.choice([50, 94, 94.9, 95, 96, 99])))
            put(selector("bfm_vram_total_bytes", lab), m, "100.0")
            put(selector("bfm_vram_full_ratio", lab), m, _fmt(full))
    # The exporter's corrupt-file counter: rises now and then, and an exporter
    # restart sets it back to 0 (a reset, not an increase).
    corrupt = 0.0
    for m in range(MINUTES + 1):
        roll = rng.random()
        corrupt = corrupt + 1 if roll < 0.15 else 0.0 if roll < 0.25 else corrupt
        put(selector("bfm_exporter_corrupt_files_total", TARGET), m, _fmt(corrupt))
    series = [(sel, " ".join(vals)) for sel, vals in rows.items()]
    return Scenario(f"fuzz_{idx}", "seeded random values on the rule thresholds", series,
                    [at(MINUTES)])


def random_scenarios(seed: int, count: int) -> list[Scenario]:
    rng = random.Random(seed)
    return [random_scenario(rng, i) for i in range(count)]
