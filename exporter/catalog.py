"""The metric contract (docs/architecture.md, "Metrics pipeline"): every name the exporter serves.

One table, used by the tracker that writes the series, the collector that
serves them, and the tests that check dashboards and rules name only metrics
that exist.
"""

from __future__ import annotations

WORKER_LABELS = ("shard", "stage", "device", "gpu")

WORKER_COUNTERS: dict[str, str] = {
    "bfm_genes": "Genes embedded by the workers of this shard/stage/device.",
    "bfm_batches": "Batches finished by the workers of this shard/stage/device.",
    "bfm_tokens": "Non-padding tokens embedded (batches that carry an attention mask).",
    "bfm_oom_batches": "Batches that raised torch's out-of-memory error.",
}

WORKER_GAUGES: dict[str, str] = {
    "bfm_genes_per_second": "Rate of the last finished batch (genes/s).",
    "bfm_genes_per_second_ema":
        "Batch-indexed EMA after warm-up, in genes/s: the EMA of each batch's pace (its "
        "predicted over its actual seconds, relative to the baseline's) x the baseline.",
    "bfm_genes_per_second_baseline":
        "The shard's own early-batch baseline (median genes/s); absent until established.",
    "bfm_crawl_streak_batches": "Consecutive batches whose EMA is below baseline / factor.",
    "bfm_crawl_factor": "HELIX_BFM_CRAWL_FACTOR as the worker uses it.",
    "bfm_crawl_window_batches": "HELIX_BFM_CRAWL_WINDOW as the worker uses it.",
    "bfm_batch_started_timestamp_seconds":
        "Unix time at which the most recent batch started (in flight or finished).",
    "bfm_batch_inflight_genes": "Genes of the batch in flight; 0 when none is.",
    "bfm_batch_inflight_work":
        "Work of the batch in flight in gene-equivalents: the seconds its shape takes at "
        "the baseline's pace x bfm_genes_per_second_baseline (its genes before the "
        "baseline); 0 when none is. The stall rule's limit is WINDOW x FACTOR x this / "
        "the baseline.",
    "bfm_worker_vram_reserved_bytes":
        "torch's caching-allocator reservation on the worker's GPU (only when the build "
        "imported torch); above the dedicated total it means the driver spilled.",
    "bfm_tokens_per_second":
        "Non-padding tokens/s of the last finished batch (only when batches carry tokens).",
    "bfm_genes_remaining":
        "Genes of the tracker's total= not yet embedded by this worker (only with total=).",
    "bfm_worker_vram_allocated_bytes":
        "Bytes in live torch tensors on the worker's GPU (only when the build imported torch).",
    "bfm_shared_min_bytes":
        "HELIX_BFM_SHARED_MIN_BYTES as the worker uses it: shared GPU memory at or above "
        "which the worker has spilled.",
}

OOM_GAUGES: dict[str, str] = {
    "bfm_worker_oom_timestamp_seconds":
        "Unix time of a worker's out-of-memory batch, served while that worker is dead "
        "(an OOM death) and for 15 minutes at most; labels add pid and worker.",
}

VRAM_LABELS = ("gpu",)

VRAM_GAUGES: dict[str, str] = {
    "bfm_vram_used_bytes": "Dedicated VRAM in use on this GPU (bytes).",
    "bfm_vram_total_bytes": "Dedicated VRAM of this GPU (bytes).",
    "bfm_vram_full_ratio":
        "HELIX_BFM_VRAM_FULL_RATIO: used/total at or above which VRAM counts as full.",
}

SHARED_GAUGES: dict[str, str] = {
    "bfm_worker_shared_memory_bytes":
        "Shared (system) GPU memory the worker process holds: the spill, as Windows counts "
        "it (PDH GPU Process Memory / Shared Usage). Absent where the platform does not count it.",
}

EXPORTER_GAUGES: dict[str, str] = {
    "bfm_vram_source_up": "1 when the VRAM source answered at this scrape, else 0.",
    "bfm_shared_memory_source_up":
        "1 when the shared-GPU-memory source answered at this scrape, else 0.",
    "bfm_exporter_live_workers": "Worker processes whose gauges are being served.",
    "bfm_worker_info":
        "1 for each live worker (labels shard, stage, device, gpu and its pid); the alerts "
        "take the pid from it, so a relaunched worker's crawl is a new alert.",
}

EXPORTER_COUNTERS: dict[str, str] = {
    "bfm_exporter_corrupt_files":
        "Unreadable worker metrics files the exporter moved to metrics/quarantine/.",
}


def all_metric_names() -> set[str]:
    """Every sample name the exporter can serve (counters with their _total)."""
    names = {f"{n}_total" for n in (*WORKER_COUNTERS, *EXPORTER_COUNTERS)}
    names |= set(WORKER_GAUGES) | set(VRAM_GAUGES) | set(EXPORTER_GAUGES) | set(OOM_GAUGES)
    names |= set(SHARED_GAUGES)
    return names
