"""The Windows branches, run here with the platform faked at the OS boundary.

No Windows machine is available, so these check what crawlguard asks of the OS
there: workers start in their own process group (CREATE_NEW_PROCESS_GROUP),
the graceful signal is CTRL_BREAK_EVENT to that group, and the hard kill after
the grace period still follows. Whether Windows delivers CTRL_BREAK_EVENT is
documented in docs/deploy.md, not tested.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from crawlguard.workers import WorkerIdentity
from sidecar.actions import restart_worker
from sidecar.supervisor import childproc

CTRL_BREAK = 1  # signal.CTRL_BREAK_EVENT's value on Windows


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(signal, "CTRL_BREAK_EVENT", CTRL_BREAK, raising=False)
    monkeypatch.setattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200, raising=False)


def test_a_worker_leads_its_own_process_group(windows: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, argv: list[str], **kwargs: Any) -> None:
            seen.update(kwargs, argv=argv)

    monkeypatch.setattr(subprocess, "Popen", Recorder)
    childproc.spawn(["python", "build.py", "--shard", "confluence"], {"A": "1"})
    assert seen["creationflags"] == 0x200
    assert "start_new_session" not in seen
    assert seen["argv"] == ["python", "build.py", "--shard", "confluence"]  # no shell


def test_the_supervisors_graceful_stop_is_ctrl_break(windows: None) -> None:
    sent: list[int] = []

    class Child:
        pid = 4242

        def poll(self) -> None:
            return None

        def send_signal(self, sig: int) -> None:
            sent.append(sig)

    childproc.request_stop(Child())  # type: ignore[arg-type]
    assert sent == [CTRL_BREAK]


def test_a_rung_sends_ctrl_break_to_the_verified_worker_then_hard_kills(
        windows: None, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        identity = WorkerIdentity.of_pid(worker.pid)
        calls: list[tuple[int, int]] = []
        real_kill = os.kill

        def kill(pid: int, sig: int) -> None:
            calls.append((pid, sig))
            if sig != CTRL_BREAK:  # psutil's hard kill goes through os.kill here
                real_kill(pid, sig)

        monkeypatch.setattr(os, "kill", kill)
        result = restart_worker(identity, grace_seconds=0.3, decided_at=0.0)
        # CTRL_BREAK_EVENT went to the worker's pid (its process group), nothing else;
        # the fake Windows did not deliver it, so the hard kill followed the grace period.
        assert calls[0] == (worker.pid, CTRL_BREAK)
        assert all(pid == worker.pid for pid, _ in calls)
        assert result.outcome == "killed"
        assert worker.wait(10) != 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
