"""End to end on a real library: sentence-transformers under ``crawlguard up``.

- A crawl: the worker is slowed from outside (SIGSTOP/SIGCONT, 90 % of every
  100 ms stopped) while it is on the "GPU", as a spill slows it; the ladder
  climbs restart then cpu, and every chunk is written once with vectors equal
  to a clean computation.
- An OOM death: the worker's forward raises torch.OutOfMemoryError on the
  "GPU"; the first death is the restart rung, the second the CPU rung.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import read_registration
from tests.helpers import REPO, Proc, crawlguard_cmd

from .conftest import require_libs
from .rigenv import full_vram_env

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP/SIGCONT")]

SHARD = "docs"
CHUNKS = 400
"""Enough that the shard cannot finish on the GPU before two crawls were acted on
(a slowed chunk takes a whole 100 ms period; on CPU the rest takes seconds)."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_libs("torch", "transformers", "sentence_transformers")
    from tests.libs import models
    return models.save_encoder(tmp_path_factory.mktemp("xlmr"), hidden=32)


def _up(state: Path, data: Path, model: Path, *extra: str) -> list[str]:
    return crawlguard_cmd(
        "up", "--state-dir", str(state), "--alert-path", "embedded", "--interval", "0.5",
        "--progress", "lines", "--shard", SHARD, "--", sys.executable, "-m",
        "tests.libs.st_worker", "--model", str(model), "--data", str(data), "--shard",
        "{shard}", "--chunks", str(CHUNKS), *extra)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return full_vram_env(tmp_path, HELIX_BFM_CRAWL_WINDOW="4",
                         HELIX_BFM_GRACE_SECONDS="10", **extra)


def _ladder(state: Path) -> dict[str, Any]:
    path = StateDir(state).ladder_file(SHARD)
    return json.loads(path.read_text()) if path.exists() else {}


def _check_outputs(data: Path, model: Path) -> None:
    import numpy as np

    from tests.libs.st_worker import encode, load_model, shard_texts
    out = data / "out" / SHARD
    assert sorted(int(p.stem) for p in out.glob("*.npy")) == list(range(CHUNKS))
    assert not list(out.glob("*.tmp"))
    written = [int(x) for x in (data / f"{SHARD}.written").read_text().split()]
    assert len(written) == len(set(written)), "a chunk was written twice"
    clean = load_model(model)
    for i, chunk in enumerate(shard_texts(SHARD, CHUNKS)):
        assert np.array_equal(np.load(out / f"{i}.npy"), encode(clean, chunk)), i


class DutyCycle:
    """Stops the shard's registered worker 90 % of the time while it is on the GPU,
    once the shard has its (healthy) GPU baseline."""

    def __init__(self, state: Path, period: float = 0.1, stopped: float = 0.9) -> None:
        self.state, self.period, self.stopped = StateDir(state), period, stopped
        self.halt = threading.Event()
        self.cycles = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _gpu_worker(self) -> psutil.Process | None:
        with contextlib.suppress(Exception):
            reg = read_registration(self.state, SHARD)
            if reg is None:
                return None
            proc = psutil.Process(reg.pid)
            if reg.identity.created_at(proc.create_time()) and \
                    proc.environ().get("BGEM3_DEVICE", "") != "cpu":
                return proc
        return None

    def _run(self) -> None:
        baseline = self.state.baseline_file(SHARD, "backfill", "cuda:0")
        while not self.halt.is_set():
            proc = self._gpu_worker() if baseline.exists() else None
            if proc is None:
                self.halt.wait(self.period)
                continue
            try:
                proc.send_signal(signal.SIGSTOP)
                time.sleep(self.period * self.stopped)  # the duty cycle itself, not a wait
            except psutil.Error:
                continue
            finally:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signal.SIGCONT)
            self.cycles += 1
            self.halt.wait(self.period * (1 - self.stopped))

    def __enter__(self) -> DutyCycle:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.thread.join(5)


def test_real_library_crawl_climbs_restart_then_cpu(tmp_path: Path, model_dir: Path) -> None:
    state, data = tmp_path / "state", tmp_path / "data"
    # A healthy start sets the shard's baseline; then the "spill" begins.
    with DutyCycle(state) as duty:
        up = Proc(_up(state, data, model_dir), env=_env(tmp_path), cwd=REPO)
        try:
            assert up.wait(300) == 0, up.output[-4000:]
        finally:
            up.stop()
    assert duty.cycles > 0
    ladder = _ladder(state)
    rungs = [e["rung"] for e in ladder["history"] if e["kind"] == "rung"]
    assert rungs == ["restart", "cpu"], ladder["history"]
    assert ladder["env"] == {"BGEM3_DEVICE": "cpu"}
    assert {e["alertname"] for e in ladder["history"] if e["kind"] == "crawl"} <= {
        "BFMShardCrawl", "BFMShardStalled"}
    _check_outputs(data, model_dir)


def test_oom_deaths_climb_restart_then_cpu(tmp_path: Path, model_dir: Path) -> None:
    state, data = tmp_path / "state", tmp_path / "data"
    up = Proc(_up(state, data, model_dir, "--oom-after", "5"), env=_env(tmp_path), cwd=REPO)
    try:
        assert up.wait(300) == 0, up.output[-4000:]
    finally:
        up.stop()
    ladder = _ladder(state)
    crawls = [e for e in ladder["history"] if e["kind"] == "crawl"]
    assert [e["alertname"] for e in crawls] == ["BFMShardOOM", "BFMShardOOM"]
    assert [e["rung"] for e in ladder["history"] if e["kind"] == "rung"] == ["restart", "cpu"]
    # Each rung was about a different dead worker, and neither signalled anyone.
    assert crawls[0]["worker"] != crawls[1]["worker"]
    assert {e.get("outcome") for e in ladder["history"] if e["kind"] == "rung"} == {
        "already_gone"}
    assert "died of GPU out-of-memory; the sidecar took its alert" in up.output
    _check_outputs(data, model_dir)
