"""A real exporter process, real worker processes, real kills, scraped over HTTP."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Proc, start_exporter, wait_until

WORKER = r"""
import sys, threading, time
from crawlguard import CrawlTracker
rate, batches = float(sys.argv[1]), int(sys.argv[2])
clock = [time.time()]
t = CrawlTracker("confluence", "backfill", "cuda:0", clock=lambda: clock[0])
for _ in range(batches):
    with t.batch(genes=64):
        clock[0] += 64 / rate
print("ready", t.streak, t.crawling, flush=True)
threading.Event().wait()  # stay alive until killed
"""


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def get(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
        **labels: str) -> float | None:
    for (n, ls), v in samples.items():
        if n == name and all(dict(ls).get(k) == x for k, x in labels.items()):
            return v
    return None


def start_worker(state: Path, rate: float, batches: int) -> Proc:
    proc = Proc([sys.executable, "-c", WORKER, str(rate), str(batches)],
                env={"HELIX_BFM_STATE_DIR": str(state)})
    proc.wait_for_line(r"^ready")
    return proc


def test_metrics_survive_a_worker_restart_and_drop_the_dead_gauges(tmp_path: Path) -> None:
    state = tmp_path / "state"
    vram = tmp_path / "vram.json"
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 11_850_000_000,
                                          "total_bytes": 12_000_000_000}]}))
    exporter, url = start_exporter(state, vram)
    first = second = None
    try:
        # First worker: healthy baseline, then a crawl long enough to hold the signature.
        first = start_worker(state, rate=15.3, batches=10)
        m = scrape(url)
        assert get(m, "bfm_genes_total", shard="confluence", gpu="0") == 640
        assert get(m, "bfm_exporter_live_workers") == 1
        assert get(m, "bfm_vram_used_bytes", gpu="0") == 11_850_000_000
        assert get(m, "bfm_vram_total_bytes", gpu="0") == 12_000_000_000
        assert get(m, "bfm_vram_full_ratio", gpu="0") == 0.95
        assert get(m, "bfm_worker_info", shard="confluence", stage="backfill", device="cuda:0",
                   gpu="0", pid=str(first.popen.pid)) == 1
        assert get(m, "bfm_shared_min_bytes", shard="confluence") == 512 * 2**20
        first.popen.kill()
        first.wait()

        # Dead worker: counters stay, its gauges are gone.
        m = wait_until(lambda: (lambda s: s if get(s, "bfm_exporter_live_workers") == 0
                                else None)(scrape(url)), what="dead worker's gauges dropped")
        assert get(m, "bfm_genes_total", shard="confluence") == 640
        assert get(m, "bfm_genes_per_second", shard="confluence") is None
        assert get(m, "bfm_crawl_streak_batches", shard="confluence") is None
        assert get(m, "bfm_worker_info") is None  # its identity left with its gauges

        second = start_worker(state, rate=30.0, batches=3)
        m = scrape(url)
        assert get(m, "bfm_genes_total", shard="confluence") == 640 + 192
        assert get(m, "bfm_batches_total", shard="confluence") == 13
        assert get(m, "bfm_genes_per_second", shard="confluence") == pytest.approx(30.0)
        # The new worker reuses the persisted baseline (15.3) and is healthy.
        assert get(m, "bfm_genes_per_second_baseline", shard="confluence") == pytest.approx(15.3)
        assert get(m, "bfm_crawl_streak_batches", shard="confluence") == 0
        assert get(m, "bfm_exporter_live_workers") == 1
        infos = [ls for (n, ls) in m if n == "bfm_worker_info"]
        assert infos == [(("device", "cuda:0"), ("gpu", "0"), ("pid", str(second.popen.pid)),
                          ("shard", "confluence"), ("stage", "backfill"))]

        # VRAM is re-read at every scrape.
        vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 884 * 2**20,
                                              "total_bytes": 12_000_000_000}]}))
        assert get(scrape(url), "bfm_vram_used_bytes", gpu="0") == 884 * 2**20
    finally:
        for p in (first, second, exporter):
            if p is not None:
                p.stop()


def test_exporter_refuses_a_busy_port_with_a_clear_message(tmp_path: Path) -> None:
    exporter, url = start_exporter(tmp_path / "s")
    try:
        port = url.rsplit(":", 1)[1]
        from tests.helpers import crawlguard_cmd

        clash = Proc(crawlguard_cmd("exporter", "--port", port),
                     env={"HELIX_BFM_STATE_DIR": str(tmp_path / "s")})
        assert clash.wait() == 2
        assert "HELIX_BFM_EXPORTER_PORT" in clash.output and "Traceback" not in clash.output
    finally:
        exporter.stop()
