from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import pytest

from crawlguard.exporter.collector import VramCollector
from crawlguard.gpu.vram import FileSource, GpuMemory, NvmlSource, TorchSource, source_from_spec
from crawlguard.kernel.errors import VramError


def doc(*gpus: tuple[int, int, int]) -> str:
    return json.dumps({"gpus": [{"index": i, "used_bytes": u, "total_bytes": t}
                                for i, u, t in gpus]})


def collect(collector: VramCollector) -> dict[tuple[str, str], float]:
    out = {}
    for metric in collector.collect():
        for s in metric.samples:
            out[(s.name, s.labels.get("gpu", s.labels.get("source", "")))] = s.value
    return out


def test_file_source_is_reread_every_time(tmp_path: Path) -> None:
    f = tmp_path / "vram.json"
    f.write_text(doc((0, 1, 12)))
    src = source_from_spec(f"file:{f}")
    assert src.read() == [GpuMemory(0, 1, 12)]
    f.write_text(doc((0, 11, 12), (1, 2, 24)))
    assert [g.used_bytes for g in src.read()] == [11, 2]


@pytest.mark.parametrize("content", [
    "", "{", "[]", '{"gpus": {}}', '{"gpus": [1]}', doc((0, 13, 12)), doc((0, 1, 0)),
    '{"gpus": [{"index": 0, "used_bytes": 1.5, "total_bytes": 2}]}',
    '{"gpus": [{"index": 0, "used_bytes": true, "total_bytes": 2}]}',
    doc((0, 1, 2), (0, 1, 2)), "[" * 100_000 + "]" * 100_000,
    '{"gpus": [{"index": 0, "used_bytes": 1e400, "total_bytes": 2}]}',
])
def test_bad_file_is_a_vram_error(tmp_path: Path, content: str) -> None:
    f = tmp_path / "vram.json"
    f.write_text(content)
    with pytest.raises(VramError):
        FileSource(f).read()


def test_missing_file_is_a_vram_error(tmp_path: Path) -> None:
    with pytest.raises(VramError, match="does not exist"):
        FileSource(tmp_path / "nope.json").read()


def test_collector_serves_used_total_and_the_full_ratio_knob(tmp_path: Path) -> None:
    f = tmp_path / "vram.json"
    f.write_text(doc((0, 11_850_000_000, 12_000_000_000)))
    got = collect(VramCollector(FileSource(f), full_ratio=0.95))
    assert got[("bfm_vram_used_bytes", "0")] == 11_850_000_000
    assert got[("bfm_vram_total_bytes", "0")] == 12_000_000_000
    assert got[("bfm_vram_full_ratio", "0")] == 0.95
    assert got[("bfm_vram_source_up", f"file:{f}")] == 1


def test_failing_source_means_absent_series_and_one_log_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "vram.json"
    collector = VramCollector(FileSource(f), full_ratio=0.95)
    with caplog.at_level(logging.INFO, "crawlguard.exporter"):
        for _ in range(3):
            got = collect(collector)
            assert not any(name.startswith("bfm_vram_used") for name, _ in got)
            assert got[("bfm_vram_source_up", f"file:{f}")] == 0
        f.write_text(doc((0, 1, 2)))
        assert collect(collector)[("bfm_vram_used_bytes", "0")] == 1
    assert caplog.text.count("failed") == 1 and "recovered" in caplog.text


def test_nvml_without_a_driver_is_a_vram_error_not_a_crash() -> None:
    # This machine has pynvml but no NVIDIA driver: nvmlInit fails.
    src = NvmlSource()
    with pytest.raises(VramError, match="NVML"):
        src.read()
    got = collect(VramCollector(src, 0.95))
    assert got == {("bfm_vram_source_up", "nvml"): 0.0}


def test_nvml_reads_every_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The NVML calls crawlguard makes, against a stand-in pynvml module (no GPU here)."""
    calls: list[str] = []

    class NVMLError(Exception):
        pass

    fake = types.ModuleType("pynvml")
    fake.NVMLError = NVMLError  # type: ignore[attr-defined]
    fake.nvmlInit = lambda: calls.append("init")  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        used=[11_850, 100][h], total=12_000)
    fake.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    src = NvmlSource()
    assert src.read() == [GpuMemory(0, 11_850, 12_000), GpuMemory(1, 100, 12_000)]
    src.read()
    assert calls == ["init"]  # initialised once
    src.close()
    assert calls == ["init", "shutdown"]


def test_torch_source_only_when_torch_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    with pytest.raises(VramError, match="not imported"):
        TorchSource().read()
    cuda = types.SimpleNamespace(
        is_available=lambda: True, device_count=lambda: 1,
        mem_get_info=lambda i: (150, 12_000), memory_reserved=lambda i: 11_000,
        memory_allocated=lambda i: 9_000)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert TorchSource().read() == [GpuMemory(0, 11_850, 12_000, 11_000, 9_000)]


def test_unknown_source_spec() -> None:
    with pytest.raises(VramError):
        source_from_spec("rocm")


def test_tracker_publishes_torchs_view_only_when_the_build_imported_torch(
        state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crawlguard import CrawlTracker
    from crawlguard.exporter.collector import WorkerCollector

    def published() -> dict[str, float]:
        return {s.name: s.value for m in WorkerCollector(state_dir / "metrics").collect()
                for s in m.samples if s.name.startswith("bfm_worker_vram")}

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    CrawlTracker("a", device="cuda:0", state_dir=state_dir, env={}).observe(64, 1.0)
    assert published() == {}

    cuda = types.SimpleNamespace(
        is_available=lambda: True, device_count=lambda: 2,
        mem_get_info=lambda i: (150, 12_000), memory_reserved=lambda i: [0, 13_500][i],
        memory_allocated=lambda i: [0, 9_000][i])
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    t = CrawlTracker("b", device="cuda:1", state_dir=state_dir, env={})
    t.observe(64, 1.0)
    # Reserved above the 12 000-byte card: the driver spilled into shared memory.
    assert published() == {"bfm_worker_vram_reserved_bytes": 13_500,
                           "bfm_worker_vram_allocated_bytes": 9_000}
    cpu = CrawlTracker("c", device="cpu", state_dir=state_dir, env={})
    assert cpu._torch is None
