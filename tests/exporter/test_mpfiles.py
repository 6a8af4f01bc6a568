"""The metrics files: crawlguard's own writer and reader of prometheus_client's format,
checked where read. Hostile keys, names and truncated files are quarantined, never
merged, and every scrape answers 200 (real files, a real exporter over HTTP)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from crawlguard.exporter import mpfiles
from crawlguard.exporter.collector import LiveWorkersCollector, WorkerCollector
from crawlguard.exporter.compaction import ARCHIVE, MetricsJanitor
from crawlguard.exporter.mpfiles import BadMetricsFile, encode_key
from crawlguard.kernel.workers import WorkerIdentity
from tests.helpers import start_exporter, wait_until

LIVE = WorkerIdentity(os.getpid(), 1234.5)
LABELS = {"shard": "good", "stage": "b", "device": "cuda:0", "gpu": "0"}

GOLDEN_COUNTER = bytes.fromhex(
    "6800000000000000480000005b2262666d5f67656e6573222c202262666d5f67656e65735f746f74616c"
    "222c207b227368617264223a202273222c20227374616765223a202262227d2c202247656e65732e225d"
    "2020202000000000000050400000000000000000")
GOLDEN_GAUGE = bytes.fromhex(
    "60000000000000003e0000005b2262666d5f637261776c5f666163746f72222c202262666d5f637261776c"
    "5f666163746f72222c207b227368617264223a202273227d2c2022462e225d20202020202000000000000014"
    "4000002040fc54d941")
"""The used bytes of two files that prometheus_client 0.26's MmapedDict wrote: a counter
file with bfm_genes_total{shard="s",stage="b"} 64, a gauge file with
bfm_crawl_factor{shard="s"} 5 at 1700000000.5. Files written before crawlguard had
its own writer look like these."""
COUNTER_KEY = encode_key("bfm_genes", "bfm_genes_total", {"shard": "s", "stage": "b"}, "Genes.")
GAUGE_KEY = encode_key("bfm_crawl_factor", "bfm_crawl_factor", {"shard": "s"}, "F.")


def dead(i: int) -> WorkerIdentity:
    return WorkerIdentity(2 ** 22 - 3, 1000.0 + i)


def alive(identity: WorkerIdentity) -> bool:
    return identity == LIVE


def write(path: Path, entries: list[tuple[str, float, float]]) -> Path:
    f = mpfiles.MetricsFile(path)
    for key, value, ts in entries:
        f.write_value(key, value, ts)
    f.close()
    return path


def counter(directory: Path, who: WorkerIdentity, genes: float, shard: str = "good") -> Path:
    return write(directory / mpfiles.file_name("counter", who), [
        (encode_key("bfm_genes", "bfm_genes_total", {**LABELS, "shard": shard}, "Genes."),
         genes, 0.0)])


def raw_file(path: Path, keys: list[bytes], value: float = 1.0) -> Path:
    """A file of the format with arbitrary key bytes (what no writer of ours makes)."""
    body = b""
    for key in keys:
        pad = 8 - (len(key) + 4) % 8
        body += struct.pack("i", len(key)) + key + b" " * pad + struct.pack("dd", value, 0.0)
    path.write_bytes(struct.pack("i", 8 + len(body)) + b"\0" * 4 + body)
    return path


class Exposition:
    """One exporter's worker collectors, scraped through a real registry."""

    def __init__(self, directory: Path,
                 alive: Callable[[WorkerIdentity], bool] = alive) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.workers = WorkerCollector(directory, alive)
        self.registry.register(self.workers)
        self.registry.register(LiveWorkersCollector(self.workers))

    def scrape(self) -> str:
        return generate_latest(self.registry).decode()


def scrape(directory: Path) -> tuple[str, WorkerCollector]:
    exposition = Exposition(directory)
    return exposition.scrape(), exposition.workers


# -- the format --------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "key", "value", "stamp", "golden"), [
    ("counter", COUNTER_KEY, 64.0, 0.0, GOLDEN_COUNTER),
    ("gauge", GAUGE_KEY, 5.0, 1700000000.5, GOLDEN_GAUGE)])
def test_the_writer_writes_what_prometheus_client_wrote_and_the_reader_reads_it(
        tmp_path: Path, kind: mpfiles.Kind, key: str, value: float, stamp: float,
        golden: bytes) -> None:
    data = write(tmp_path / "ours.db", [(key, value, stamp)]).read_bytes()
    assert len(data) == mpfiles.INITIAL_SIZE
    assert data[:len(golden)] == golden and not data[len(golden):].strip(b"\0")
    old = tmp_path / "old.db"
    old.write_bytes(golden)  # cut to its used bytes: still whole
    [entry] = mpfiles.read(old, kind)
    assert (entry.value, entry.timestamp) == (value, stamp)
    assert encode_key(entry.metric, entry.sample, dict(entry.labels), entry.help) == key
    with pytest.raises(BadMetricsFile, match=r"no (counter|gauge)"):
        mpfiles.read(old, "gauge" if kind == "counter" else "counter")


def test_a_file_grows_past_its_first_size_and_a_reopened_file_keeps_its_series(
        tmp_path: Path) -> None:
    path = tmp_path / "counter_1-2.db"
    f = mpfiles.MetricsFile(path)
    keys = [encode_key("bfm_genes", "bfm_genes_total", {"shard": f"s{i:04d}"}, "x" * 200)
            for i in range(400)]
    for i, key in enumerate(keys):
        f.write_value(key, float(i), 0.0)
    f.close()
    assert path.stat().st_size == 2 * mpfiles.INITIAL_SIZE  # doubled once
    again = mpfiles.MetricsFile(path)
    assert again.read_value(keys[399]) == 399.0
    again.write_value(keys[0], 7.0, 0.0)
    again.close()
    entries = mpfiles.read(path, "counter")
    assert len(entries) == 400 and entries[0].value == 7.0


def test_the_merge_serves_what_prometheus_clients_merge_served(tmp_path: Path) -> None:
    a, b = WorkerIdentity(11, 1.0), WorkerIdentity(12, 2.0)
    counter(tmp_path, a, 10)
    counter(tmp_path, b, 5)
    counter(tmp_path, b, 0, shard="other")
    for who, value, stamp in ((a, 1.0, 100.0), (b, 2.0, 200.0)):
        write(tmp_path / mpfiles.file_name("gauge", who), [
            (encode_key("bfm_crawl_factor", "bfm_crawl_factor", LABELS, "F."), value, stamp)])
    files = sorted(str(p) for p in tmp_path.glob("*.db"))
    theirs = CollectorRegistry(auto_describe=False)

    class Library:
        def collect(self) -> Any:
            return MultiProcessCollector.merge(files, accumulate=True)

    theirs.register(Library())  # type: ignore[arg-type]
    ours = CollectorRegistry(auto_describe=False)

    class Ours:
        def collect(self) -> Any:
            return mpfiles.merge(MetricsJanitor(tmp_path, lambda _: True).read_all())

    ours.register(Ours())  # type: ignore[arg-type]
    lines = sorted(generate_latest(ours).decode().splitlines())
    assert lines == sorted(generate_latest(theirs).decode().splitlines())
    assert 'bfm_genes_total{device="cuda:0",gpu="0",shard="good",stage="b"} 15.0' in lines
    assert 'bfm_crawl_factor{device="cuda:0",gpu="0",shard="good",stage="b"} 2.0' in lines


# -- hostile keys, names and files ---------------------------------------------------------

HOSTILE_KEYS = [
    b"1",                                                    # valid JSON, wrong shape
    b"[1, 2, 3, 4]",
    b'["bfm_genes", "bfm_genes_total", {"shard": "s"}]',    # three parts
    b'["bfm genes", "bfm genes_total", {}, ""]',            # not a metric name
    b'["bfm_genes", "bfm_genes", {}, ""]',                  # a counter's sample is _total
    b'["bfm_genes", "bfm_genes_total", {"a-b": "x"}, ""]',  # not a label name
    b'["bfm_genes", "bfm_genes_total", {"__name__": "x"}, ""]',
    b'["bfm_genes", "bfm_genes_total", {"shard": 1}, ""]',  # a label value not a string
    b'["bfm_genes", "bfm_genes_total", {}, 7]',
    b"[" * 100_000,                                          # nested too deep to parse
    b"\xff\xfe",                                             # not UTF-8
    b"not json",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=range(len(HOSTILE_KEYS)))
def test_a_hostile_key_is_quarantined_never_merged_and_the_scrape_goes_on(
        tmp_path: Path, key: bytes) -> None:
    counter(tmp_path, LIVE, 7)
    bad = raw_file(tmp_path / mpfiles.file_name("counter", dead(0)), [key])
    counter(tmp_path, dead(1), 5, shard="old")
    exporter = Exposition(tmp_path)
    for _ in range(2):
        text = exporter.scrape()
        assert 'bfm_genes_total{device="cuda:0",gpu="0",shard="good",stage="b"} 7.0' in text
        assert 'bfm_genes_total{device="cuda:0",gpu="0",shard="old",stage="b"} 5.0' in text
        assert "bfm_exporter_corrupt_files_total 1.0" in text
    assert not bad.exists() and (tmp_path / "quarantine" / bad.name).exists()
    archived = mpfiles.read(tmp_path / ARCHIVE, "counter")  # dead(1) only
    assert [(e.labels, e.value) for e in archived] == [
        (tuple(sorted({**LABELS, "shard": "old"}.items())), 5.0)]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_a_counter_that_is_no_count_is_quarantined(tmp_path: Path, value: float) -> None:
    key = encode_key("bfm_genes", "bfm_genes_total", LABELS, "Genes.")
    write(tmp_path / mpfiles.file_name("counter", dead(0)), [(key, value, 0.0)])
    text, _ = scrape(tmp_path)
    assert "bfm_genes_total" not in text and "bfm_exporter_corrupt_files_total 1.0" in text


@pytest.mark.parametrize("name", ["gauge_x.db", "counter_.db", "counter_0-1.db", "x.db",
                                  "gauge_liveall_12-34.db", "counter_12-34_5.db",
                                  "gauge_livemostrecent_12-３４.db", "counter_archive2.db"])
def test_a_file_of_a_name_crawlguard_never_writes_is_quarantined(tmp_path: Path,
                                                                  name: str) -> None:
    counter(tmp_path, LIVE, 7)
    (tmp_path / name).write_bytes(GOLDEN_GAUGE)  # a good file, under a name that is not
    text, workers = scrape(tmp_path)
    assert 'bfm_genes_total{device="cuda:0",gpu="0",shard="good",stage="b"} 7.0' in text
    assert "bfm_crawl_factor" not in text and not (tmp_path / name).exists()
    assert (tmp_path / "quarantine" / name).exists() and workers.live_workers == 0


@pytest.mark.parametrize("cut", [0, 3, 7, 12, 40, 80, len(GOLDEN_COUNTER) - 1])
def test_a_truncated_file_is_quarantined(tmp_path: Path, cut: int) -> None:
    counter(tmp_path, LIVE, 7)
    bad = tmp_path / mpfiles.file_name("counter", dead(0))
    bad.write_bytes(GOLDEN_COUNTER[:cut])
    text, _ = scrape(tmp_path)
    assert 'shard="good"' in text and "bfm_exporter_corrupt_files_total 1.0" in text
    assert (tmp_path / "quarantine" / bad.name).exists()


@pytest.mark.parametrize("cut", [0, 4, 7])
def test_a_live_workers_file_shorter_than_its_header_is_skipped_until_it_reads(
        tmp_path: Path, cut: int) -> None:
    path = tmp_path / mpfiles.file_name("gauge", LIVE)
    path.write_bytes(GOLDEN_GAUGE[:cut])  # the writer creates it empty, then sizes it
    text, _ = scrape(tmp_path)
    assert path.exists() and "bfm_exporter_corrupt_files_total 0.0" in text
    path.unlink()
    write(path, [(encode_key("bfm_crawl_factor", "bfm_crawl_factor", LABELS, "F."), 5.0, 1.0)])
    assert 'bfm_crawl_factor{device="cuda:0",gpu="0",shard="good",stage="b"} 5.0' in \
        scrape(tmp_path)[0]


def test_garbage_over_a_live_workers_file_is_quarantined_counted_and_written_anew(
        tmp_path: Path) -> None:
    """Issue 18: garbage over a live gauge file hid that worker's crawl with no signal.
    The exporter moves it and counts it; the writer (this process is the live worker)
    notices and writes a new file with every series it holds."""
    me = WorkerIdentity.current()
    writer = mpfiles.SeriesWriter(tmp_path, list(LABELS), list(LABELS.values()),
                                  {"bfm_genes": "Genes."}, {"bfm_crawl_factor": "F."})
    writer.record({"bfm_genes": 7.0}, {"bfm_crawl_factor": 5.0})
    gauge = tmp_path / mpfiles.file_name("gauge", me)
    with open(gauge, "r+b") as fh:  # dd if=/dev/urandom conv=notrunc, seeded
        fh.write(random.Random(18).randbytes(4096))
    exposition = Exposition(tmp_path, alive=lambda w: w == me)
    text = exposition.scrape()
    assert "bfm_exporter_corrupt_files_total 1.0" in text and "bfm_crawl_factor" not in text
    assert (tmp_path / "quarantine" / gauge.name).exists() and not gauge.exists()
    wait_until(lambda: writer.set_many({}) or gauge.exists(), timeout=10,
               what="the worker writes a new gauge file")
    writer.record({"bfm_genes": 1.0}, {})
    text = exposition.scrape()
    assert 'bfm_crawl_factor{device="cuda:0",gpu="0",shard="good",stage="b"} 5.0' in text
    assert 'bfm_genes_total{device="cuda:0",gpu="0",shard="good",stage="b"} 8.0' in text
    assert "bfm_exporter_corrupt_files_total 1.0" in text


@pytest.mark.skipif(sys.platform == "win32", reason="the exporter test helper is POSIX")
def test_the_real_exporter_answers_200_over_http_beside_hostile_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    metrics = state / "metrics"
    metrics.mkdir(parents=True)
    counter(metrics, dead(0), 9, shard="ok")
    raw_file(metrics / mpfiles.file_name("counter", dead(1)), [b"1"])
    (metrics / "gauge_x.db").write_bytes(GOLDEN_GAUGE)
    vram = tmp_path / "vram.json"
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 1, "total_bytes": 2}]}))
    exporter, url = start_exporter(state, vram)
    try:
        for _ in range(3):
            r = httpx.get(f"{url}/metrics", timeout=10)
            assert r.status_code == 200
            assert 'bfm_genes_total{device="cuda:0",gpu="0",shard="ok",stage="b"} 9.0' in r.text
            assert "bfm_exporter_corrupt_files_total 2.0" in r.text
    finally:
        exporter.stop()


# -- fuzzing -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=5),
    max_leaves=20)
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_the_reader_with_arbitrary_bytes(tmp_path_factory: pytest.TempPathFactory,
                                              data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "counter_1-2.db"
    path.write_bytes(data)
    for kind in ("counter", "gauge"):
        with contextlib.suppress(BadMetricsFile):
            mpfiles.read(path, kind)  # type: ignore[arg-type]


@FUZZ
@given(st.lists(json_values, min_size=1, max_size=3), st.floats())
def test_fuzz_keys_of_arbitrary_json_read_or_are_refused_and_the_scrape_answers(
        tmp_path_factory: pytest.TempPathFactory, keys: list[Any], value: float) -> None:
    directory = tmp_path_factory.mktemp("fuzz")
    counter(directory, LIVE, 7)
    raw = [json.dumps(k).encode() for k in keys]
    path = raw_file(directory / mpfiles.file_name("counter", dead(0)), raw, value)
    try:
        for e in mpfiles.read(path, "counter"):
            assert e.sample == e.metric + "_total" and e.value >= 0
    except BadMetricsFile:
        pass
    text, _ = scrape(directory)  # never raises: bad files are quarantined
    assert 'bfm_genes_total{device="cuda:0",gpu="0",shard="good",stage="b"} 7.0' in text
