"""The shared-GPU-memory source, driven by a fake at the PDH function boundary.

The fake behaves like PDH as the source relies on it: handles per query, a
wildcard counter expanded at each collection, instance names
``pid_<pid>_luid_0x<hi>_0x<lo>_phys_<n>``, 0 for every instance at a fresh
query's first collection, and English vs localised counter names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from crawlguard.exporter import catalog
from crawlguard.exporter.mpfiles import MetricsFile, encode_key
from crawlguard.exporter.sharedcollector import SharedMemoryCollector
from crawlguard.gpu.shared import (
    COUNTER_PATH,
    FileSharedSource,
    PdhError,
    PdhSharedSource,
    resolve_spec,
    shared_source_from_spec,
    sum_by_pid,
)
from crawlguard.kernel.errors import SharedMemoryError

PDH_CSTATUS_NO_OBJECT = 0xC0000BB8
PDH_CSTATUS_NO_COUNTER = 0xC0000BB9
MIB = 1 << 20


def inst(pid: int, hi: int = 0, lo: int = 0xD1B7, phys: int = 0) -> str:
    return f"pid_{pid}_luid_0x{hi:08X}_0x{lo:08X}_phys_{phys}"


class FakePdh:
    """PDH on a German Windows: the English path resolves only through the English call."""

    LOCALISED = "\\GPU-Prozessspeicher(*)\\Freigegebene Nutzung"

    def __init__(self, instances: Mapping[str, float] | None = None,
                 english_fails: int | None = None, reexpands: bool = True) -> None:
        self.instances: dict[str, float] = dict(instances or {})
        self.english_fails = english_fails
        self.reexpands = reexpands
        """False: a wildcard counter keeps the instances it had when it was added (what
        PdhAddEnglishCounterW's documentation allows), values still update."""
        self.expanded: dict[int, set[str]] = {}
        self.calls: list[str] = []
        self.collections: dict[int, int] = {}
        self.counters: dict[int, int] = {}
        self.open: set[int] = set()
        self._next = 0

    def open_query(self) -> int:
        self.calls.append("open")
        self._next += 1
        self.open.add(self._next)
        self.collections[self._next] = 0
        return self._next

    def add_counter(self, query: int, path: str) -> int:
        """The localised call (PdhAddCounterW): English names are unknown here."""
        self.calls.append("add_localised")
        if path != self.LOCALISED:
            raise PdhError("PdhAddCounterW", PDH_CSTATUS_NO_OBJECT)
        return self._counter(query)

    def add_english_counter(self, query: int, path: str) -> int:
        self.calls.append("add_english")
        if self.english_fails is not None:
            raise PdhError("PdhAddEnglishCounterW", self.english_fails)
        assert path == COUNTER_PATH
        return self._counter(query)

    def _counter(self, query: int) -> int:
        assert query in self.open
        self.counters[query + 1000] = query
        self.expanded[query + 1000] = set(self.instances)
        return query + 1000

    def collect(self, query: int) -> None:
        assert query in self.open, "collect on a closed query"
        self.calls.append("collect")
        self.collections[query] += 1

    def formatted_array(self, counter: int) -> Mapping[str, float]:
        query = self.counters[counter]
        assert query in self.open
        self.calls.append("array")
        names = set(self.instances) if self.reexpands else (
            self.expanded[counter] & set(self.instances))
        if self.collections[query] <= 1:
            return {name: 0.0 for name in names}  # first collection reads 0
        return {name: self.instances[name] for name in names}

    def close_query(self, query: int) -> None:
        self.calls.append("close")
        self.open.discard(query)


def test_sums_a_pids_instances_over_adapters_and_physical_indices() -> None:
    values = {inst(10, lo=1, phys=0): 300 * MIB, inst(10, lo=1, phys=1): 20 * MIB,
              inst(10, hi=1, lo=2): 5 * MIB, inst(11): 7.0, inst(99): 1e12,
              "_Total": 1e15, "pid_x_luid": 3.0, inst(12): float("nan"), inst(13): -1.0}
    assert sum_by_pid(values, [10, 11, 12, 13, 14]) == {10: 325 * MIB, 11: 7}


def test_first_collection_of_a_fresh_query_is_never_served() -> None:
    pdh = FakePdh({inst(10): 512 * MIB})
    src = PdhSharedSource(pdh)
    assert src.read([10]) == {10: 512 * MIB}  # the primed query, not the 0
    assert pdh.calls == ["open", "add_english", "collect", "collect", "array"]


def test_one_batched_collection_per_read_whatever_the_number_of_workers() -> None:
    pdh = FakePdh({inst(pid, phys=p): MIB for pid in range(100, 140) for p in range(2)})
    src = PdhSharedSource(pdh)
    pids = list(range(100, 140))
    src.read(pids)
    pdh.calls.clear()
    got = src.read(pids)
    assert got == {pid: 2 * MIB for pid in pids}
    assert pdh.calls == ["collect", "array"]


def test_a_new_worker_pid_rebuilds_the_query() -> None:
    pdh = FakePdh({inst(10): MIB, inst(20): 3 * MIB})
    src = PdhSharedSource(pdh)
    src.read([10])
    pdh.calls.clear()
    assert src.read([20]) == {20: 3 * MIB}
    assert pdh.calls == ["close", "open", "add_english", "collect", "collect", "array"]
    assert len(pdh.open) == 1


def test_a_worker_whose_instance_appears_later_gets_it_by_a_bounded_rebuild() -> None:
    # The worker registers before CUDA starts: no instance when the query is built, and
    # this PDH does not re-expand the wildcard by itself.
    now = [1000.0]
    pdh = FakePdh({inst(20): MIB}, reexpands=False)
    src = PdhSharedSource(pdh, clock=lambda: now[0], reexpand_s=15)
    assert src.read([10, 20]) == {20: MIB}
    pdh.instances[inst(10)] = 700 * MIB   # CUDA started, the spill is counted
    now[0] += 14
    pdh.calls.clear()
    assert src.read([10, 20]) == {20: MIB}   # not before the bound: no rebuild
    assert pdh.calls == ["collect", "array"]
    now[0] += 1
    pdh.calls.clear()
    assert src.read([10, 20]) == {10: 700 * MIB, 20: MIB}
    assert pdh.calls == ["collect", "array", "close", "open", "add_english", "collect",
                         "collect", "array"]
    pdh.calls.clear()
    now[0] += 100   # every wanted pid has its instance: nothing more to expand
    assert src.read([10, 20]) == {10: 700 * MIB, 20: MIB}
    assert pdh.calls == ["collect", "array"]


def test_a_missing_counter_set_says_what_windows_lacks() -> None:
    src = PdhSharedSource(FakePdh(english_fails=PDH_CSTATUS_NO_OBJECT))
    with pytest.raises(SharedMemoryError, match=r"counter set 'GPU Process Memory' is absent.*"
                                                r"WDDM 2"):
        src.read([10])


def test_a_vanished_pid_has_no_reading_not_zero() -> None:
    pdh = FakePdh({inst(10): MIB, inst(20): 2 * MIB})
    src = PdhSharedSource(pdh)
    assert src.read([10, 20]) == {10: MIB, 20: 2 * MIB}
    del pdh.instances[inst(20)]
    assert src.read([10, 20]) == {10: MIB}


def test_localised_windows_works_because_the_counter_is_added_by_its_english_name() -> None:
    pdh = FakePdh({inst(10): 64 * MIB})
    with pytest.raises(PdhError, match="PdhAddCounterW"):
        pdh.add_counter(pdh.open_query(), COUNTER_PATH)  # what a localised add would do
    pdh.calls.clear()
    assert PdhSharedSource(pdh).read([10]) == {10: 64 * MIB}
    assert "add_localised" not in pdh.calls


def test_missing_counters_are_a_shared_memory_error_and_the_query_is_retried() -> None:
    pdh = FakePdh({inst(10): MIB}, english_fails=PDH_CSTATUS_NO_OBJECT)
    src = PdhSharedSource(pdh)
    with pytest.raises(SharedMemoryError, match=r"PdhAddEnglishCounterW failed \(status "
                                                r"0xC0000BB8\)"):
        src.read([10])
    assert not pdh.open  # the half-built query was closed
    pdh.english_fails = None
    assert src.read([10]) == {10: MIB}


def test_a_collection_failure_closes_the_query() -> None:
    pdh = FakePdh({inst(10): MIB})
    src = PdhSharedSource(pdh)
    src.read([10])

    def broken(query: int) -> None:
        raise PdhError("PdhCollectQueryData", 0x800007D5)

    pdh.collect = broken  # type: ignore[method-assign]
    with pytest.raises(SharedMemoryError, match="PdhCollectQueryData"):
        src.read([10])
    assert not pdh.open


def test_without_pywin32_the_real_pdh_says_what_to_install() -> None:
    src = shared_source_from_spec("pdh")
    assert src is not None
    try:
        import win32pdh  # noqa: F401
    except ImportError:
        with pytest.raises(SharedMemoryError, match="pip install pywin32"):
            src.read([1])
    else:  # a Windows machine: the real counters answer (no GPU: an empty table)
        assert isinstance(src.read([1]), dict)


def test_auto_is_pdh_on_windows_and_off_elsewhere() -> None:
    assert resolve_spec("auto", "win32") == "pdh"
    assert resolve_spec("auto", "linux") == "off"
    assert shared_source_from_spec("auto", "linux") is None
    assert shared_source_from_spec("off", "win32") is None
    assert isinstance(shared_source_from_spec("auto", "win32"), PdhSharedSource)


@pytest.mark.parametrize("content", ["", "[]", '{"processes": {}}', '{"processes": [1]}',
                                     '{"processes": [{"pid": 1, "shared_bytes": -1}]}',
                                     '{"processes": [{"pid": true, "shared_bytes": 1}]}',
                                     "[" * 100_000 + "]" * 100_000,
                                     '{"processes": [{"pid": 1, "shared_bytes": 1e400}]}'])
def test_bad_file_is_a_shared_memory_error(tmp_path: Path, content: str) -> None:
    f = tmp_path / "shared.json"
    f.write_text(content)
    with pytest.raises(SharedMemoryError):
        FileSharedSource(f).read([1])


def write_worker(metrics: Path, key: str, *labelsets: tuple[str, str, str, str]) -> None:
    metrics.mkdir(parents=True, exist_ok=True)
    d = MetricsFile(metrics / f"gauge_livemostrecent_{key}.db")
    for labels in labelsets:
        d.write_value(encode_key("bfm_crawl_factor", "bfm_crawl_factor",
                                 dict(zip(catalog.WORKER_LABELS, labels, strict=True)), "doc"),
                      5.0, 1.0)
    d.close()


def scrape(collector: SharedMemoryCollector) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for metric in collector.collect():
        for s in metric.samples:
            out[(s.name, *(s.labels.get(k, "") for k in ("source", *catalog.WORKER_LABELS)))] \
                = s.value
    return out


def test_collector_labels_each_live_workers_reading_with_its_series(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    write_worker(metrics, "10-1000", ("alpha", "backfill", "cuda:0", "0"),
                 ("alpha", "embed", "cuda:0", "0"))
    write_worker(metrics, "20-2000", ("beta", "backfill", "cuda:1", "1"))
    write_worker(metrics, "30-3000", ("gamma", "backfill", "cuda:0", "0"))
    pdh = FakePdh({inst(10, phys=0): 300 * MIB, inst(10, phys=1): 12 * MIB,
                   inst(20, lo=7): 0.0})
    got = scrape(SharedMemoryCollector(metrics, PdhSharedSource(pdh)))
    name = "bfm_worker_shared_memory_bytes"
    assert got == {
        ("bfm_shared_memory_source_up", "pdh", "", "", "", ""): 1.0,
        (name, "", "alpha", "backfill", "cuda:0", "0"): 312 * MIB,
        (name, "", "alpha", "embed", "cuda:0", "0"): 312 * MIB,
        (name, "", "beta", "backfill", "cuda:1", "1"): 0.0,
    }  # gamma (pid 30) has no instance: absent, not 0


def test_collector_failure_means_absent_series_source_down_and_one_log_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    metrics = tmp_path / "metrics"
    write_worker(metrics, "10-1000", ("alpha", "backfill", "cuda:0", "0"))
    pdh = FakePdh({inst(10): MIB}, english_fails=PDH_CSTATUS_NO_COUNTER)
    collector = SharedMemoryCollector(metrics, PdhSharedSource(pdh))
    with caplog.at_level(logging.INFO, logger="crawlguard.exporter"):
        assert scrape(collector) == {("bfm_shared_memory_source_up", "pdh", "", "", "", ""): 0}
        scrape(collector)
        assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
        pdh.english_fails = None
        got = scrape(collector)
    assert got[("bfm_shared_memory_source_up", "pdh", "", "", "", "")] == 1.0
    assert got[("bfm_worker_shared_memory_bytes", "", "alpha", "backfill", "cuda:0", "0")] == MIB
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_exporter_serves_the_series_from_a_file_source(tmp_path: Path) -> None:
    import os

    import httpx

    from crawlguard.exporter.server import Exporter, ExporterConfig
    from crawlguard.exporter.tracker import CrawlTracker

    state = tmp_path / "state"
    vram = tmp_path / "vram.json"
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 1, "total_bytes": 2}]}))
    shared = tmp_path / "shared.json"
    shared.write_text(json.dumps({"processes": [{"pid": os.getpid(), "shared_bytes": 777}]}))
    CrawlTracker("alpha", state_dir=state, env={})
    exp = Exporter(ExporterConfig(state_dir=state, vram_source=f"file:{vram}",
                                  vram_full_ratio=0.95, port=0, shared_source=f"file:{shared}"))
    exp.start()
    try:
        text = httpx.get(f"http://127.0.0.1:{exp.port}/metrics").text
    finally:
        exp.stop()
    assert ('bfm_worker_shared_memory_bytes{device="cuda:0",gpu="0",shard="alpha",'
            'stage="backfill"} 777.0') in text
    assert 'bfm_shared_memory_source_up{source="file:' in text


def test_exporter_on_linux_serves_no_shared_series_by_default(tmp_path: Path) -> None:
    from crawlguard.exporter.server import Exporter, ExporterConfig

    exp = Exporter(ExporterConfig(state_dir=tmp_path, vram_source="file:/nonexistent",
                                  vram_full_ratio=0.95, port=0))
    names: Any = {m.name for m in exp.registry.collect()}
    assert exp.shared is None or exp.shared.name == "pdh"
    assert ("bfm_shared_memory_source_up" in names) == (exp.shared is not None)


@pytest.mark.parametrize(("knob", "value"), [
    ("HELIX_BFM_SHARED_SOURCE", "nvml"), ("HELIX_BFM_SHARED_SOURCE", "file:"),
    ("HELIX_BFM_PROMETHEUS_URL", "localhost:9090"), ("HELIX_BFM_ALERTMANAGER_URL", "x"),
])
def test_bad_shared_source_or_preflight_url_names_the_knob(knob: str, value: str) -> None:
    from crawlguard.kernel.errors import ConfigError
    from crawlguard.kernel.settings import Preflight, Settings

    with pytest.raises(ConfigError) as info:
        Settings.from_env({knob: value})
        Preflight.from_env({knob: value})
    assert info.value.knob == knob


def test_shared_source_knob_values() -> None:
    from crawlguard.kernel.settings import Preflight, Settings

    assert Settings.from_env({}).shared_source == "auto"
    assert Settings.from_env({"HELIX_BFM_SHARED_SOURCE": "PDH"}).shared_source == "pdh"
    assert Settings.from_env({"HELIX_BFM_SHARED_SOURCE": "file:/x"}).shared_source == "file:/x"
    pre = Preflight.from_env({"HELIX_BFM_PROMETHEUS_URL": "http://127.0.0.1:9090/"})
    assert pre.prometheus_url == "http://127.0.0.1:9090" and pre.alertmanager_url is None
