"""Unreadable metrics files never blind the exporter; dead workers' counters are compacted
without ever losing or double-counting a gene, wherever the exporter dies."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from crawlguard.exporter.collector import LiveWorkersCollector, WorkerCollector
from crawlguard.exporter.compaction import ARCHIVE, JOURNAL, MetricsJanitor
from crawlguard.exporter.mpfiles import MetricsFile, encode_key
from crawlguard.kernel.workers import WorkerIdentity

LABELS = ["shard", "stage", "device", "gpu"]
LIVE = WorkerIdentity(os.getpid(), 1234.5)


def write_counter(directory: Path, identity: WorkerIdentity, shard: str, genes: float) -> Path:
    path = directory / f"counter_{identity.key}.db"
    f = MetricsFile(path)
    f.write_value(encode_key("bfm_genes", "bfm_genes_total",
                             dict(zip(LABELS, [shard, "b", "cuda:0", "0"], strict=True)),
                             "Genes."), genes, 0.0)
    f.close()
    return path


def alive(identity: WorkerIdentity) -> bool:
    return identity == LIVE


def scrape(directory: Path) -> tuple[dict[str, float], float]:
    """Genes per shard and bfm_exporter_corrupt_files_total, through a real registry."""
    registry = CollectorRegistry(auto_describe=False)
    workers = WorkerCollector(directory, alive)
    registry.register(workers)
    registry.register(LiveWorkersCollector(workers))
    genes: dict[str, float] = {}
    corrupt = -1.0
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name == "bfm_genes_total":
                genes[s.labels["shard"]] = s.value
            if s.name == "bfm_exporter_corrupt_files_total":
                corrupt = s.value
    return genes, corrupt


def dead(i: int) -> WorkerIdentity:
    return WorkerIdentity(2 ** 22 - 3, 1000.0 + i)


@pytest.mark.parametrize("content", [b"\x08\x00\x00\x00\x00\x00\x00", b"\xff" * 8,
                                     b"\x40\x00\x00\x00\x00\x00\x00\x00\x30\x00\x00\x00ab"])
def test_an_unreadable_dead_workers_file_is_quarantined_once(
        tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    write_counter(tmp_path, LIVE, "good", 7)
    bad = tmp_path / f"counter_{dead(0).key}.db"
    bad.write_bytes(content)
    registry = CollectorRegistry(auto_describe=False)
    workers = WorkerCollector(tmp_path, alive)
    registry.register(workers)
    registry.register(LiveWorkersCollector(workers))
    with caplog.at_level(logging.ERROR, "crawlguard.exporter"):
        for _ in range(3):
            text = generate_latest(registry).decode()
            assert 'bfm_genes_total{device="cuda:0",gpu="0",shard="good",stage="b"} 7.0' in text
            assert "bfm_exporter_corrupt_files_total 1.0" in text
    assert not bad.exists() and (tmp_path / "quarantine" / bad.name).read_bytes() == content
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 1


def test_a_live_workers_unreadable_file_is_skipped_not_moved(tmp_path: Path) -> None:
    live = tmp_path / f"gauge_livemostrecent_{LIVE.key}.db"
    live.write_bytes(b"\x00" * 3)
    write_counter(tmp_path, dead(1), "old", 5)
    genes, corrupt = scrape(tmp_path)
    assert genes == {"old": 5} and corrupt == 0
    assert live.exists()


def test_dead_counter_files_are_compacted_into_one_archive(tmp_path: Path) -> None:
    for i in range(50):
        write_counter(tmp_path, dead(i), f"s{i % 3}", i + 1)
    write_counter(tmp_path, LIVE, "s0", 1000)
    expected = {"s0": 1000.0 + sum(i + 1 for i in range(0, 50, 3)),
                "s1": float(sum(i + 1 for i in range(1, 50, 3))),
                "s2": float(sum(i + 1 for i in range(2, 50, 3)))}
    assert scrape(tmp_path)[0] == expected
    assert sorted(p.name for p in tmp_path.glob("*.db")) == sorted(
        [ARCHIVE, f"counter_{LIVE.key}.db"])
    write_counter(tmp_path, dead(99), "s1", 5)      # a later worker dies: merged again
    expected["s1"] += 5
    assert scrape(tmp_path)[0] == expected
    assert len(list(tmp_path.glob("*.db"))) == 2


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", ["tmp_written", "journal_written", "archive_replaced",
                                  "source_deleted"])
def test_a_crash_at_any_step_never_loses_or_double_counts(tmp_path: Path, step: str) -> None:
    write_counter(tmp_path, dead(0), "s", 1)
    MetricsJanitor(tmp_path, alive).compact()            # an archive exists already
    for i in range(1, 6):
        write_counter(tmp_path, dead(i), "s", 10 * i)
    write_counter(tmp_path, LIVE, "s", 1000)
    total = 1 + sum(10 * i for i in range(1, 6)) + 1000

    def crash_at(name: str) -> None:
        if name == step:
            raise Crash(name)

    with pytest.raises(Crash):
        MetricsJanitor(tmp_path, alive, crash_at).compact()
    assert (tmp_path / JOURNAL).exists() == (step != "tmp_written")
    # The restarted exporter serves exact totals from its first scrape on, and after.
    assert scrape(tmp_path)[0] == {"s": total}
    assert not (tmp_path / JOURNAL).exists()
    assert not list(tmp_path.glob("*.tmp"))
    assert scrape(tmp_path)[0] == {"s": total}
    assert sorted(p.name for p in tmp_path.glob("*.db")) == sorted(
        [ARCHIVE, f"counter_{LIVE.key}.db"])
