"""restart_worker against real processes: identity, graceful signal, hard kill, groups."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from crawlguard.kernel.workers import WorkerIdentity
from crawlguard.sidecar.actions import restart_worker
from tests.helpers import wait_until
from tests.sidecar.conftest import Worker

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")


def ref(w: Worker, shift: float = 0.0) -> WorkerIdentity:
    return WorkerIdentity(w.identity.pid, w.identity.create_time + shift)


def test_graceful_signal_then_exit_is_signalled(spawn_worker: Callable[..., Worker]) -> None:
    w = spawn_worker("s")
    before = time.time()
    result = restart_worker(ref(w), grace_seconds=10)
    assert result.outcome == "signalled", result
    assert result.effective_at >= before
    assert w.wait_exit() == 0
    assert len(w.terms) == 1


def test_worker_ignoring_sigterm_is_killed_after_grace(
        spawn_worker: Callable[..., Worker]) -> None:
    w = spawn_worker("s", "--ignore-term")
    t0 = time.monotonic()
    result = restart_worker(ref(w), grace_seconds=0.5)
    assert result.outcome == "killed", result
    assert time.monotonic() - t0 >= 0.5
    assert w.wait_exit() == -9
    assert len(w.terms) == 1  # it did get the graceful signal first


def test_reused_pid_is_never_signalled(spawn_worker: Callable[..., Worker]) -> None:
    w = spawn_worker("s")
    for shift in (-100.0, 0.5):
        result = restart_worker(ref(w, shift), grace_seconds=1)
        assert result.outcome == "identity_mismatch", result
    assert w.alive() and w.terms == []


def test_a_gone_worker_is_already_gone(spawn_worker: Callable[..., Worker]) -> None:
    w = spawn_worker("s")
    identity = ref(w)
    w.kill()
    assert restart_worker(identity, 1).outcome == "already_gone"


def test_group_leader_gets_its_whole_group_signalled(
        spawn_worker: Callable[..., Worker]) -> None:
    w = spawn_worker("s", "--child")
    child_file = Path(f"{w.signal_file}.child")
    assert os.getpgid(w.proc.pid) == w.proc.pid  # Proc starts a new session
    assert restart_worker(ref(w), 10).outcome == "signalled"
    wait_until(lambda: child_file.exists() and "TERM" in child_file.read_text(),
               what="the grandchild's SIGTERM")


def test_non_leader_gets_only_its_pid_signalled(tmp_path: Path) -> None:
    # A worker in OUR process group: signalling the group would hit pytest itself.
    out = tmp_path / "sig.txt"
    proc = subprocess.Popen([sys.executable, "-m", "tests.sidecar.worker_child",
                             str(tmp_path / "st"), "s", str(out)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("registered")
        assert os.getpgid(proc.pid) == os.getpgrp()
        from crawlguard.kernel.workers import WorkerIdentity
        ident = WorkerIdentity.of_pid(proc.pid)
        result = restart_worker(WorkerIdentity(ident.pid, ident.create_time), 10)
        assert result.outcome == "signalled"
        assert proc.wait(10) == 0 and out.read_text().startswith("TERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
