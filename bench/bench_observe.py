"""Cost of CrawlTracker.observe() next to bare prometheus_client multiprocess writes,
and the exporter's scrape time with 64 shards x 2 stages.

    .venv/bin/python bench/bench_observe.py [--batches 20000] [--shards 64]

Targets (issue 2): observe() <= 10 us per batch and <= 3x the bare writes;
a scrape <= 50 ms with 64 shards x 2 stages. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BARE = r"""
import json, os, sys, time
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from prometheus_client import Counter, Gauge
n, writes_c, writes_g = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
labels = dict(shard="confluence", stage="backfill", device="cuda:0", gpu="0")
counters = [Counter(f"c{i}", "c", list(labels)).labels(**labels) for i in range(writes_c)]
gauges = [Gauge(f"g{i}", "g", list(labels), multiprocess_mode="livemostrecent").labels(**labels)
          for i in range(writes_g)]
out = []
for k in range(n):
    t0 = time.perf_counter_ns()
    for c in counters:
        c.inc(64)
    for g in gauges:
        g.set(k)
    out.append(time.perf_counter_ns() - t0)
print(json.dumps(out))
"""

OBSERVE = r"""
import json, sys, time
from crawlguard import CrawlTracker
n = int(sys.argv[2])
t = CrawlTracker("confluence", "backfill", "cuda:0", state_dir=sys.argv[1], env={})
out = []
for k in range(n):
    t0 = time.perf_counter_ns()
    t.observe(64, 4.2 if k % 50 else 30.0)
    out.append(time.perf_counter_ns() - t0)
print(json.dumps(out))
"""

WORKER = r"""
import sys, threading
from crawlguard import CrawlTracker
for stage in ("drain", "backfill"):
    t = CrawlTracker(sys.argv[2], stage, "cuda:0", state_dir=sys.argv[1], env={})
    for _ in range(20):
        t.observe(64, 4.2)
print("ready", flush=True)
threading.Event().wait()
"""


def run_json(code: str, *args: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=True, cwd=REPO)
    return list(json.loads(out.stdout))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_observe(batches: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        obs = [ns / 1000 for ns in run_json(OBSERVE, tmp, str(batches))]
    # What a steady-state observe() writes: genes and batches counters; rate, EMA and
    # batch start gauges (the streak only when it changes, the knobs and baseline once).
    n_c, n_g = 2, 3
    with tempfile.TemporaryDirectory() as tmp:
        bare = [ns / 1000 for ns in run_json(BARE, tmp, str(batches), str(n_c), str(n_g))]
    o50, o99 = statistics.median(obs), pct(obs, 0.99)
    b50, b99 = statistics.median(bare), pct(bare, 0.99)
    print(f"observe() x{batches}: median {o50:.2f} us, p99 {o99:.2f} us "
          "(rate state + metric writes + batches.jsonl line)")
    print(f"bare prometheus_client multiprocess writes ({n_c} inc + {n_g} set) x{batches}: "
          f"median {b50:.2f} us, p99 {b99:.2f} us")
    print(f"ratio observe/bare: median {o50 / b50:.2f}x, p99 {o99 / b99:.2f}x   "
          f"(targets: <= 10 us, <= 3x)")


def bench_scrape(shards: int, dead_per_shard: int, scrapes: int) -> None:
    import httpx

    from crawlguard.exporter.server import Exporter, ExporterConfig
    from tests.helpers import Proc

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        # Dead workers' counter files, as left by earlier restarts.
        for _d in range(dead_per_shard):
            procs = [Proc([sys.executable, "-c", WORKER, str(state), f"shard{i:03d}"], cwd=REPO)
                     for i in range(shards)]
            for p in procs:
                p.wait_for_line("^ready", timeout=120)
                p.stop()
        live = [Proc([sys.executable, "-c", WORKER, str(state), f"shard{i:03d}"], cwd=REPO)
                for i in range(shards)]
        try:
            for p in live:
                p.wait_for_line("^ready", timeout=120)
            vram = state / "vram.json"
            vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 1, "total_bytes": 2}]}))
            exporter = Exporter(ExporterConfig(state, f"file:{vram}", 0.95, port=0))
            exporter.start()
            try:
                url = f"http://127.0.0.1:{exporter.port}/metrics"
                times, size = [], 0
                with httpx.Client() as client:
                    for _ in range(scrapes):
                        t0 = time.perf_counter()
                        size = len(client.get(url).content)
                        times.append((time.perf_counter() - t0) * 1000)
            finally:
                exporter.stop()
        finally:
            for p in live:
                p.stop()
    files = shards * (dead_per_shard + 1)
    print(f"scrape over HTTP, {shards} shards x 2 stages, {shards} live workers + "
          f"{shards * dead_per_shard} dead ({files} counter files), {size} bytes: "
          f"median {statistics.median(times):.1f} ms, p99 {pct(times, 0.99):.1f} ms "
          f"over {scrapes} scrapes (target <= 50 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--dead-per-shard", type=int, default=1)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    bench_observe(args.batches)
    bench_scrape(args.shards, args.dead_per_shard, args.scrapes)


if __name__ == "__main__":
    main()
