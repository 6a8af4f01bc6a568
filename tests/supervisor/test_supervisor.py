"""The supervisor loop with real (scripted) worker processes."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from crawlguard.gpu.vram import GpuMemory
from crawlguard.kernel.errors import VramError
from crawlguard.kernel.settings import Remediation
from crawlguard.kernel.statedir import StateDir, write_json_atomic
from crawlguard.supervisor.loop import (
    EXIT_FUTILE,
    EXIT_OK,
    EXIT_STOPPED,
    Supervisor,
    SupervisorConfig,
    SupervisorEvent,
)
from tests.helpers import wait_until

FAKE = str(Path(__file__).with_name("fake_worker.py"))
GIB = 1 << 30
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class MarkerSource:
    """A GPU whose used memory is 1 GiB, plus 10 GiB while a marker file exists
    (the fake worker creates it; "the driver" deletes it after the worker died)."""

    name = "fake"

    def __init__(self, marker: Path, total: int = 12 * GIB) -> None:
        self.marker = marker
        self.total = total

    def read(self) -> list[GpuMemory]:
        used = GIB + (10 * GIB if self.marker.exists() else 0)
        return [GpuMemory(0, used, self.total)]


class BrokenSource:
    name = "broken"

    def read(self) -> list[GpuMemory]:
        raise VramError("no NVML here")


class Harness:
    def __init__(self, tmp: Path, mode: str, shards: tuple[str, ...] = ("a",),
                 **remediation: Any) -> None:
        self.tmp = tmp
        self.record = tmp / "record.jsonl"
        self.marker = tmp / "gpu.marker"
        self.state = StateDir(tmp / "state")
        self.events: list[SupervisorEvent] = []
        rem = replace(Remediation(), grace_seconds=5.0, **remediation)
        self.config = SupervisorConfig(
            shards=shards, command=(sys.executable, FAKE, mode, "{shard}", str(self.record)),
            state_dir=self.state.root, remediation=rem, poll_interval=0.02)
        self.env = {"PATH": "", "FAKE_GPU_MARKER": str(self.marker)}

    def supervisor(self, source: Any = None) -> Supervisor:
        return Supervisor(self.config, source=source, on_event=self.events.append,
                          base_env=self.env)

    def launches(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def test_each_shard_once_in_order_with_its_name_env_and_own_process_group(
        tmp_path: Path) -> None:
    h = Harness(tmp_path, "ok", shards=("confluence", "slack__eng-oncall"))
    assert h.supervisor().run(threading.Event()) == EXIT_OK
    seen = h.launches()
    assert [s["shard"] for s in seen] == ["confluence", "slack__eng-oncall"]
    assert all(s["env_shard"] == s["shard"] for s in seen)
    assert all(s["leader"] for s in seen)
    assert all(Path(s["state"]).is_absolute() for s in seen)
    assert h.kinds().count("done") == 2


@pytest.mark.parametrize("mode", ["crash-once", pytest.param("killed-once", marks=posix_only)])
def test_relaunched_after_a_crash_with_the_overrides_reread(tmp_path: Path, mode: str) -> None:
    h = Harness(tmp_path, mode)

    def on_event(e: SupervisorEvent) -> None:
        h.events.append(e)
        if e.kind == "exit":   # the sidecar's CPU rung, written while the worker is dead
            write_json_atomic(h.state.ladder_file("a"), {"env": {"BGEM3_DEVICE": "cpu"}})

    sup = h.supervisor()
    sup.on_event = on_event
    assert sup.run(threading.Event()) == EXIT_OK
    assert [s["device"] for s in h.launches()] == [None, "cpu"]
    exit_event = next(e for e in h.events if e.kind == "exit")
    assert ("exit code 1" if mode == "crash-once" else "signal SIGKILL") in exit_event.message


def test_gives_up_after_max_futile_restarts_with_exit_3(tmp_path: Path) -> None:
    h = Harness(tmp_path, "fail", max_futile_restarts=2)
    assert h.supervisor().run(threading.Event()) == EXIT_FUTILE
    assert len(h.launches()) == 3          # the launch and two futile relaunches
    gave_up = next(e for e in h.events if e.kind == "gave-up")
    assert "HELIX_BFM_MAX_FUTILE_RESTARTS=2" in gave_up.message


def test_progress_resets_the_futile_count(tmp_path: Path) -> None:
    h = Harness(tmp_path, "progress-3-then-fail", max_futile_restarts=2)
    assert h.supervisor().run(threading.Event()) == EXIT_FUTILE
    # Three launches that each logged genes, then two futile relaunches.
    assert len(h.launches()) == 5


@posix_only
def test_stop_forwards_the_graceful_signal_and_returns_130(tmp_path: Path) -> None:
    h = Harness(tmp_path, "wait-term")
    stop = threading.Event()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(h.supervisor().run(stop)))
    t.start()
    wait_until(lambda: (tmp_path / "a.ready").exists(), what="worker ready")
    stop.set()
    t.join(30)
    assert result == [EXIT_STOPPED]
    assert (tmp_path / "a.terminated").read_text() == "15"
    assert "stopping" in h.kinds()


def test_waits_until_the_dead_worker_gpu_memory_is_released(tmp_path: Path) -> None:
    h = Harness(tmp_path, "hold-then-crash-once", gpu_release_timeout=30.0)
    released_at: list[float] = []

    def driver_frees_later(e: SupervisorEvent) -> None:
        h.events.append(e)
        if e.kind == "exit":
            def free() -> None:
                released_at.append(time.monotonic())
                h.marker.unlink()
            threading.Timer(0.4, free).start()

    sup = h.supervisor(MarkerSource(h.marker))
    sup.on_event = driver_frees_later
    assert sup.run(threading.Event()) == EXIT_OK
    second = h.launches()[1]
    assert second["gpu_held"] is False   # relaunched only once the memory was free
    wait = next(e for e in h.events if e.kind == "gpu-wait")
    assert wait.message.startswith("GPU memory released")


def test_gpu_wait_is_bounded(tmp_path: Path) -> None:
    h = Harness(tmp_path, "hold-then-crash-once", gpu_release_timeout=0.3)
    assert h.supervisor(MarkerSource(h.marker)).run(threading.Event()) == EXIT_OK
    wait = next(e for e in h.events if e.kind == "gpu-wait")
    assert "relaunching anyway" in wait.message
    assert h.launches()[1]["gpu_held"] is True


def test_no_gpu_wait_on_cpu_or_without_a_reading(tmp_path: Path) -> None:
    h = Harness(tmp_path, "hold-then-crash-once", gpu_release_timeout=30.0)
    write_json_atomic(h.state.ladder_file("a"), {"env": {"BGEM3_DEVICE": "cpu"}})
    assert h.supervisor(MarkerSource(h.marker)).run(threading.Event()) == EXIT_OK
    assert "gpu-wait" not in h.kinds()
    h2 = Harness(tmp_path / "b", "crash-once", gpu_release_timeout=30.0)
    (tmp_path / "b").mkdir()
    assert h2.supervisor(BrokenSource()).run(threading.Event()) == EXIT_OK
    wait = next(e for e in h2.events if e.kind == "gpu-wait")
    assert "not measured" in wait.message


@pytest.mark.parametrize(("total_gib", "explicit", "expected"), [
    (12, None, "cpu"), (24, None, None), (12, "cuda:0", "cuda:0")])
def test_small_rig_policy(tmp_path: Path, total_gib: int, explicit: str | None,
                          expected: str | None) -> None:
    h = Harness(tmp_path, "ok", cpu_backfill_max_vram_gb=12.0)
    if explicit:
        h.env["BGEM3_DEVICE"] = explicit
    assert h.supervisor(MarkerSource(h.marker, total_gib * GIB)).run(
        threading.Event()) == EXIT_OK
    assert h.launches()[0]["device"] == expected
    assert "policy" in h.kinds()


def test_resume_overrides_win_over_the_policy(tmp_path: Path) -> None:
    h = Harness(tmp_path, "ok", cpu_backfill_max_vram_gb=12.0)
    write_json_atomic(h.state.ladder_file("a"), {"env": {"BGEM3_DEVICE": "cuda:1"}})
    h.supervisor(MarkerSource(h.marker)).run(threading.Event())
    assert h.launches()[0]["device"] == "cuda:1"


def test_malformed_overrides_stop_the_supervisor(tmp_path: Path) -> None:
    from crawlguard.kernel.errors import StateError

    h = Harness(tmp_path, "ok")
    h.state.ladder_file("a").parent.mkdir(parents=True)
    h.state.ladder_file("a").write_text("{not json")
    with pytest.raises(StateError):
        h.supervisor().run(threading.Event())
    assert h.launches() == []


def test_a_worker_dead_before_any_batch_gets_its_log_tail_shown(tmp_path: Path) -> None:
    h = Harness(tmp_path, "fail", max_futile_restarts=1)
    h.config = replace(h.config, log_dir=tmp_path / "logs",
                       command=(sys.executable, "-c", "import sys; print('early line'); "
                                "sys.exit('boom: cannot import the model')"))
    assert h.supervisor().run(threading.Event()) == EXIT_FUTILE
    tails = [e.message for e in h.events if e.kind == "log-tail"]
    assert len(tails) == 2                     # one per launch, each its own lines only
    assert all(t.count("boom: cannot import the model") == 1 for t in tails)
    assert "early line" in tails[0]
