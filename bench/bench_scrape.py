"""Scrape time after 1,000 worker starts: before and after compaction
(crawlguard.exporter.compaction).

    .venv/bin/python bench/bench_scrape.py [--starts 1000] [--shards 16] [--scrapes 30]

Each worker start leaves a counter file (prometheus_client's multiprocess format,
64 KiB sparse, its counters of its shard). The files are written here by
crawlguard's writer (``crawlguard.exporter.mpfiles``) with dead identities rather
than by 1,000 real processes (minutes of interpreter start-up on a small
machine). "Before" is what the exporter did until compaction: prometheus_client's
merge over every file at every scrape. "Checked" is crawlguard's own reader and
merge over the same files, every key checked (``mpfiles.read``, ``merge``), no
compaction. "After" is the exporter's collector: the first scrape compacts the
dead files into one archive, later scrapes read the archive and the live files.
Prints figures; asserts only that the totals agree.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_files(metrics: Path, starts: int, shards: int) -> None:
    from crawlguard.exporter import catalog, mpfiles
    from crawlguard.kernel.workers import WorkerIdentity

    metrics.mkdir(parents=True)
    for i in range(starts):
        ident = WorkerIdentity(2 ** 22 - 3, 1_000_000.0 + i)   # no such pid: dead
        labels = dict(zip(catalog.WORKER_LABELS,
                          [f"shard{i % shards:03d}", "backfill", "cuda:0", "0"], strict=True))
        f = mpfiles.MetricsFile(metrics / mpfiles.file_name("counter", ident))
        for name, doc in catalog.WORKER_COUNTERS.items():
            f.write_value(mpfiles.encode_key(name, name + "_total", labels, doc),
                          float(64 * (i + 1) if name == "bfm_genes" else i + 1), 0.0)
        f.close()


def disk(metrics: Path) -> tuple[int, int]:
    files = list(metrics.glob("*.db"))
    return len(files), sum(os.stat(p).st_blocks * 512 for p in files)


def genes(text: bytes) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for fam in text_string_to_metric_families(text.decode())
               for s in fam.samples if s.name == "bfm_genes_total")


def timed(fn: Callable[[], bytes], n: int) -> tuple[list[float], bytes]:
    out: bytes = b""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--scrapes", type=int, default=30)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from crawlguard.exporter import mpfiles
    from crawlguard.exporter.collector import WorkerCollector
    from crawlguard.exporter.compaction import MetricsJanitor

    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "metrics"
        make_files(metrics, args.starts, args.shards)
        n_files, used = disk(metrics)

        old = CollectorRegistry(auto_describe=False)
        old.register(MultiProcessCollector(None, path=str(metrics)))
        before, text_before = timed(lambda: generate_latest(old), args.scrapes)

        class Checked:
            def collect(self) -> list[object]:
                return mpfiles.merge(MetricsJanitor(metrics, lambda _: True).read_all())

        checked_registry = CollectorRegistry(auto_describe=False)
        checked_registry.register(Checked())  # type: ignore[arg-type]
        checked, text_checked = timed(lambda: generate_latest(checked_registry), args.scrapes)
        assert genes(text_before) == genes(text_checked), "the checked merge changed a total"

        new = CollectorRegistry(auto_describe=False)
        new.register(WorkerCollector(metrics))
        first, _ = timed(lambda: generate_latest(new), 1)
        after, text_after = timed(lambda: generate_latest(new), args.scrapes)
        n_after, used_after = disk(metrics)
        assert genes(text_before) == genes(text_after), "compaction changed a total"

    print(f"{args.starts} worker starts over {args.shards} shards")
    print(f"before: {n_files} counter files, {used / 1024:.0f} KiB on disk; scrape median "
          f"{statistics.median(before):.1f} ms, max {max(before):.1f} ms "
          f"over {args.scrapes} scrapes")
    print(f"checked: crawlguard's reader and merge over the same {n_files} files: scrape "
          f"median {statistics.median(checked):.1f} ms, max {max(checked):.1f} ms")
    print(f"after:  first scrape (compacts) {first[0]:.1f} ms; then {n_after} file, "
          f"{used_after / 1024:.0f} KiB; scrape median {statistics.median(after):.2f} ms, "
          f"max {max(after):.2f} ms over {args.scrapes} scrapes")


if __name__ == "__main__":
    main()
