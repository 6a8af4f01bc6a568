"""The reference rebuild's pieces: vectors, corpus, outputs, verdict, simulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from crawlguard.kernel.workers import WorkerIdentity
from crawlguard.refbuild import store
from crawlguard.refbuild.corpus import ShardSpec, generate, load_manifest, read_genes
from crawlguard.refbuild.profiles import (
    INCIDENT1_FLOOR,
    INCIDENT2_FLOOR,
    GpuModel,
    Timing,
    get_profile,
)
from crawlguard.refbuild.simdevice import SimDevice
from crawlguard.refbuild.simgpu import Claim, Driver, SimGpu
from crawlguard.refbuild.vectors import DIM, VECTOR_BYTES, embed, unpack
from crawlguard.refbuild.verify import verify_shard
from crawlguard.refbuild.worker import device_from_env
from tests.helpers import REPO, Proc, wait_until


def test_vectors_are_a_function_of_the_text_alone() -> None:
    v = embed("dense vector #1")
    assert len(v) == VECTOR_BYTES and embed("dense vector #1") == v
    assert embed("dense vector #2") != v
    assert all(-1.0 <= x < 1.0 for x in unpack(v)) and len(unpack(v)) == DIM
    # Pinned bytes: a change of the algorithm would silently break resumed
    # rebuilds (old files vs. new vectors), so it must be deliberate.
    assert v.hex()[:32] == "436f34bf930110bfa09f24bf33de3cbf"


def test_corpus_is_deterministic(tmp_path: Path) -> None:
    spec = ShardSpec("confluence", files=3, genes_per_file=5, profile="incident1")
    generate(tmp_path / "a", spec)
    generate(tmp_path / "b", spec)
    for name in ("0000.jsonl", "0002.jsonl"):
        a = (tmp_path / "a" / "confluence" / "input" / name).read_bytes()
        assert a == (tmp_path / "b" / "confluence" / "input" / name).read_bytes()
    m = load_manifest(tmp_path / "a", "confluence")
    assert (m.genes, m.profile, len(m.files)) == (15, "incident1", 3)
    genes = read_genes(tmp_path / "a" / "confluence" / "input" / "0001.jsonl")
    assert [g for g, _ in genes] == [f"confluence:0001:{i:05d}" for i in range(5)]


def _fill_outputs(data: Path, shard: str) -> None:
    m = load_manifest(data, shard)
    for name in m.files:
        genes = read_genes(data / shard / "input" / name)
        store.write_output(store.output_path(data, shard, name), name, "cuda:0",
                           [(g, embed(t)) for g, t in genes])


def test_verdict_catches_missing_duplicated_and_different_vectors(tmp_path: Path) -> None:
    generate(tmp_path, ShardSpec("s", files=3, genes_per_file=4))
    _fill_outputs(tmp_path, "s")
    assert verify_shard(tmp_path, "s").lossless
    out = store.output_path(tmp_path, "s", "0001.jsonl")
    vectors = store.read_output(out)
    assert vectors is not None
    store.write_output(out, "0001.jsonl", "cpu", vectors[:-1])   # a gene lost
    v = verify_shard(tmp_path, "s")
    assert (v.lossless, v.missing) == (False, 1)
    store.write_output(out, "0001.jsonl", "cpu", vectors)
    store.write_output(out.with_name("copy.json"), "0001.jsonl", "cpu", vectors[:1])
    v = verify_shard(tmp_path, "s")
    assert (v.lossless, v.duplicated) == (False, 1)
    out.with_name("copy.json").unlink()
    store.write_output(out, "0001.jsonl", "cpu",
                       [(vectors[0][0], embed("other")), *vectors[1:]])
    v = verify_shard(tmp_path, "s")
    assert (v.lossless, v.mismatched) == (False, 1)


def test_incomplete_outputs_are_redone_and_temporaries_removed(tmp_path: Path) -> None:
    generate(tmp_path, ShardSpec("s", files=1, genes_per_file=4))
    out = store.output_path(tmp_path, "s", "0000.jsonl")
    out.parent.mkdir(parents=True)
    out.write_text('{"vectors": [', encoding="utf-8")        # cut short by hand
    assert not store.is_complete(out, 4)
    (out.parent / ".0000.json.x.tmp").write_text("half", encoding="utf-8")
    assert store.remove_stale_temporaries(tmp_path, "s") == 1


def _run(profile: str, device: str = "cuda:0", batches: int = 100) -> list[float]:
    sim = SimDevice(device, get_profile(profile), batches, Timing(jitter=0.0), seed="x")
    return [sim.step(8) for _ in range(batches)]


def test_profiles_follow_the_incidents() -> None:
    base = 8 / Timing().gpu_rate
    healthy = _run("healthy")
    assert max(healthy[1:]) == pytest.approx(base)
    inc1 = _run("incident1")   # spills after 60 of 100 batches, decays to the floor
    assert inc1[59] == pytest.approx(base)
    assert inc1[60] > base and inc1[-1] == pytest.approx(base / INCIDENT1_FLOOR, rel=1e-3)
    inc2 = _run("incident2")   # spills after 25 batches and collapses at once
    assert inc2[24] == pytest.approx(base)
    assert inc2[25] == pytest.approx(base / INCIDENT2_FLOOR)
    cpu = _run("incident2", device="cpu")   # the CPU never spills
    assert max(cpu[1:]) == pytest.approx(8 / Timing().cpu_rate)


def test_vram_fills_to_the_incident_level_and_cpu_keeps_a_small_context() -> None:
    m = GpuModel()
    sim = SimDevice("cuda:0", get_profile("incident1"), 10, Timing(), seed="x")
    for _ in range(6):
        sim.step(8)
    assert sim.spilled and sim.vram + m.desktop_bytes == m.spill_bytes
    assert (sim.vram + m.desktop_bytes) / m.total_bytes >= 0.95
    cpu = SimDevice("cpu", get_profile("incident1"), 10, Timing(), seed="x")
    cpu.step(8)
    assert cpu.vram == 0 and not cpu.spilled


def test_driver_frees_a_dead_process_memory_only_after_it_died(tmp_path: Path) -> None:
    gpu = SimGpu(tmp_path)
    gpu.configure()
    desktop = GpuModel().desktop_bytes
    Claim(gpu, 0).set(1 << 30)                   # this process: alive
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        Claim(gpu, 0, WorkerIdentity.of_pid(child.pid)).set(2 << 30)
        driver = Driver(gpu, release_delay=5.0)
        assert driver.step(now=0.0)["gpus"][0]["used_bytes"] == desktop + (3 << 30)
        child.kill()
        child.wait()
        # Dead, but the driver releases asynchronously...
        assert driver.step(now=1.0)["gpus"][0]["used_bytes"] == desktop + (3 << 30)
        # ...and then for good.
        assert driver.step(now=6.5)["gpus"][0]["used_bytes"] == desktop + (1 << 30)
        doc = json.loads(gpu.vram_file.read_text(encoding="utf-8"))
        assert doc["gpus"][0]["used_bytes"] == desktop + (1 << 30)
        assert len(list(gpu.claims_dir.glob("*.json"))) == 1
    finally:
        if child.poll() is None:
            child.kill()


def test_device_from_env() -> None:
    assert device_from_env({}) == "cuda:0"
    assert device_from_env({"BGEM3_DEVICE": "cpu"}) == "cpu"
    assert device_from_env({"BGEM3_DEVICE": "cuda"}) == "cuda:0"
    assert device_from_env({"HELIX_BFM_DEVICE_VAR": "DEV", "DEV": "cuda:1"}) == "cuda:1"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_worker_salvages_on_sigterm_and_resumes_losslessly(tmp_path: Path) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    generate(data, ShardSpec("s", files=12, genes_per_file=16))
    env = {"HELIX_BFM_STATE_DIR": str(state), "BGEM3_DEVICE": "cpu"}
    argv = [sys.executable, "-m", "crawlguard.refbuild", "work", "--data", str(data), "--shard",
            "s", "--time-scale", "2"]
    worker = Proc(argv, env=env, cwd=REPO)
    out_dir = store.output_dir(data, "s")
    wait_until(lambda: out_dir.is_dir() and len(list(out_dir.glob("*.json"))) >= 2,
               timeout=60, what="two finished files")
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(30) == 128 + signal.SIGTERM
    done = len(list(out_dir.glob("*.json")))
    assert 2 <= done < 12
    assert not verify_shard(data, "s").lossless   # not finished...
    resumed = Proc([*argv[:-2], "--time-scale", "50"], env=env, cwd=REPO)
    assert resumed.wait(60) == 0, resumed.output
    v = verify_shard(data, "s")
    assert v.lossless, v                           # ...but nothing lost or doubled
    assert f"({16 * (12 - done)} genes written by this worker)" in resumed.output


def test_a_driver_that_cannot_write_says_so_once_until_it_can(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 18: on a full disk the driver failed every step, 20 warnings a second."""
    import logging
    import threading

    caplog.set_level(logging.INFO, logger="crawlguard")
    gpu = SimGpu(tmp_path / "simgpu")
    gpu.configure()
    gpu.vram_file.unlink(missing_ok=True)
    gpu.vram_file.mkdir()  # a directory where vram.json belongs: every write fails
    stop, steps = threading.Event(), []

    class Counted(Driver):
        def step(self, now: float | None = None) -> dict[str, object]:
            steps.append(now)
            if len(steps) == 5:
                gpu.vram_file.rmdir()
            if len(steps) >= 8:
                stop.set()
            return super().step(now)

    Counted(gpu).run(stop, interval=0.0)
    said = [r.getMessage() for r in caplog.records if r.name.endswith("simgpu")]
    assert len(steps) == 8
    assert len(said) == 2 and "cannot write" in said[0], said
    assert said[1] == "simulated GPU: recovered"
