"""Windows: a pid is held by a handle from its identity check to the signal (issue 20).

At the OS boundary (tests/winfakes.py): every ``OpenProcess``/``GetProcessTimes``/
``TerminateProcess``/``CloseHandle`` crawlguard asks for is recorded in one log
with the CTRL_BREAK_EVENT it sends, so the order is what is checked: both the
worker and the leader of the group the break goes to are opened and verified
*before* the break, and closed only after the wait and the kill. The processes are
real POSIX ones; a real Windows runs the same paths in test_windows_real.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from crawlguard.kernel import longpaths, processes, winproc
from crawlguard.kernel.settings import Remediation
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import LaunchRecord, WorkerIdentity, read_launch
from crawlguard.sidecar.actions import restart_worker
from crawlguard.supervisor import childproc, runrecord
from crawlguard.supervisor.loop import Supervisor, SupervisorConfig, SupervisorEvent
from tests.winfakes import CTRL_BREAK, FakeJobs, FakeProcesses

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fakes Windows on POSIX")

WRAPPER = ("import subprocess, sys; "
           "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
           "print(c.pid, flush=True); sys.exit(c.wait())")


@pytest.fixture
def log(jobs: FakeJobs, procs: FakeProcesses,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    """One log of the job, handle and break calls, in the order they were made."""
    calls: list[tuple[str, Any]] = []
    jobs.on_call = procs.on_call = calls
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        if sig == CTRL_BREAK:
            calls.append(("break", pid))
        else:
            real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", kill)
    yield calls


def launch_wrapper() -> tuple[subprocess.Popen[bytes], psutil.Process]:
    popen = childproc.spawn([sys.executable, "-c", WRAPPER], dict(os.environ),
                            stdout=subprocess.PIPE)
    assert popen.stdout is not None
    return popen, psutil.Process(int(popen.stdout.readline()))


def record_of(popen: subprocess.Popen[bytes]) -> LaunchRecord:
    ident = WorkerIdentity.of_pid(popen.pid)
    return LaunchRecord(pid=ident.pid, create_time=ident.create_time,
                        job=childproc.job_of(popen))


@pytest.fixture
def wrapped(jobs: FakeJobs) -> Iterator[tuple[subprocess.Popen[bytes], psutil.Process]]:
    popen, worker = launch_wrapper()
    yield popen, worker
    childproc.release(popen)
    for proc in (worker, psutil.Process(popen.pid) if popen.poll() is None else None):
        if proc is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
    popen.wait(10)


def test_the_worker_and_its_group_leader_are_held_from_the_check_to_the_kill(
        wrapped: tuple[subprocess.Popen[bytes], psutil.Process], log: list[tuple[str, Any]],
        jobs: FakeJobs) -> None:
    popen, worker = wrapped
    launch = record_of(popen)
    log.clear()
    result = restart_worker(WorkerIdentity.of_pid(worker.pid), grace_seconds=0.2, launch=launch)
    assert result.outcome == "killed"   # the fake break is not delivered
    names = [c for c in log if c[0] in ("open", "created", "break", "terminate", "close")]
    # Held first, checked through the handles, then the break to the group, then the
    # job's kill, and only then the handles let go.
    assert names == [("open", worker.pid), ("created", worker.pid),
                     ("open", popen.pid), ("created", popen.pid),
                     ("break", popen.pid),
                     ("terminate", next(iter(jobs.jobs))),
                     ("close", worker.pid), ("close", popen.pid)]
    psutil.wait_procs([worker], timeout=10)
    assert not worker.is_running()


def test_without_a_job_the_kill_is_terminate_process_on_the_held_handles(
        jobs: FakeJobs, procs: FakeProcesses, log: list[tuple[str, Any]]) -> None:
    jobs.fail_create = True
    popen, worker = launch_wrapper()
    try:
        launch = record_of(popen)
        assert launch.job is None
        result = restart_worker(WorkerIdentity.of_pid(worker.pid), grace_seconds=0.2,
                                launch=launch)
        assert result.outcome == "killed"
        # TerminateProcess on the handles opened at the check (never a kill by pid),
        # the worker's and its launcher's.
        assert ("terminate", worker.pid) in procs.calls
        assert ("terminate", popen.pid) in procs.calls
        assert popen.wait(10) != 0
    finally:
        childproc.release(popen)
        for proc in (worker,):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


def test_a_pid_that_changed_hands_is_let_go_before_any_signal(
        wrapped: tuple[subprocess.Popen[bytes], psutil.Process], log: list[tuple[str, Any]],
        procs: FakeProcesses) -> None:
    popen, worker = wrapped
    ident = WorkerIdentity.of_pid(worker.pid)
    launch = record_of(popen)

    class Recycled(WorkerIdentity):
        """Alive at the first check; another process by the time the handle is open."""

        def status(self, tolerance: float = processes.CREATE_TIME_TOLERANCE_S) -> str:
            return "alive"

    result = restart_worker(Recycled(ident.pid, ident.create_time - 5), grace_seconds=0.2,
                            launch=launch)
    assert result.outcome == "identity_mismatch"
    assert not [c for c in log if c[0] in ("break", "terminate")]
    assert ("close", worker.pid) in log    # the handle opened for the check is closed
    assert worker.is_running()


def test_a_worker_that_cannot_be_opened_is_never_signalled(
        wrapped: tuple[subprocess.Popen[bytes], psutil.Process], log: list[tuple[str, Any]],
        procs: FakeProcesses) -> None:
    popen, worker = wrapped
    procs.deny.add(worker.pid)   # OpenProcess: access denied
    result = restart_worker(WorkerIdentity.of_pid(worker.pid), grace_seconds=0.2,
                            launch=record_of(popen))
    assert result.outcome == "identity_mismatch"
    assert not [c for c in log if c[0] in ("break", "terminate")]


def test_a_leader_whose_pid_changed_hands_gets_no_break_the_worker_is_killed(
        wrapped: tuple[subprocess.Popen[bytes], psutil.Process], log: list[tuple[str, Any]],
        jobs: FakeJobs) -> None:
    popen, worker = wrapped
    launch = record_of(popen)
    target = processes.Target(worker.pid, group=popen.pid,
                              group_created=launch.create_time - 5, job=launch.job)
    with target:
        assert target.pin(WorkerIdentity.of_pid(worker.pid).create_time) == "ok"
        stopped = processes.stop(target, 5)
    assert stopped.outcome == "killed" and not stopped.graceful
    assert not [c for c in log if c[0] == "break"]
    assert ("close", popen.pid) in log   # the leader's handle was let go at once


def test_a_break_by_an_unpinned_group_id_is_refused(log: list[tuple[str, Any]]) -> None:
    # A Target nobody pinned: on Windows the group id could name anyone by now.
    with processes.Target(os.getpid(), group=os.getpid() + 1) as target:
        assert target.terminate() is False
    assert not [c for c in log if c[0] == "break"]


def test_an_exit_status_of_no_handler_says_nothing_was_salvaged(
        wrapped: tuple[subprocess.Popen[bytes], psutil.Process], procs: FakeProcesses,
        monkeypatch: pytest.MonkeyPatch) -> None:
    popen, worker = wrapped
    procs.exit_codes[worker.pid] = winproc.STATUS_CONTROL_C_EXIT

    real_kill = os.kill

    def windows_without_a_handler(pid: int, sig: int) -> None:
        # What Windows does to a group whose processes installed no SIGBREAK handler.
        if sig == CTRL_BREAK:
            assert pid == popen.pid
            sig = signal.SIGKILL
            pid = worker.pid
        real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", windows_without_a_handler)
    result = restart_worker(WorkerIdentity.of_pid(worker.pid), grace_seconds=10,
                            launch=record_of(popen))
    assert result.outcome == "signalled"
    assert "0xC000013A" in result.detail and "nothing was salvaged" in result.detail


def test_the_no_handler_statuses() -> None:
    assert processes.unsalvaged(0xC000013A, "win32")
    assert processes.unsalvaged(-1073741510, "win32")   # the same, as a signed int
    assert processes.unsalvaged(1, "win32") is None
    assert processes.unsalvaged(-15, "linux") and processes.unsalvaged(0, "linux") is None
    assert processes.unsalvaged(None) is None


def test_windows_exit_statuses_are_shown_as_windows_shows_them(windows: None) -> None:
    assert childproc.describe_exit(0xC000013A) == "exit code 0xC000013A"
    assert childproc.describe_exit(3) == "exit code 3"


# -- the launch is recorded before the worker runs; a failed start leaks nothing ---------------

def test_the_launch_is_recorded_while_the_child_is_still_suspended(
        jobs: FakeJobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(longpaths, "long_paths_enabled", lambda: True)  # no registry here
    state = StateDir(tmp_path / "state")
    seen_at_resume: list[LaunchRecord | None] = []
    real_resume = jobs.resume

    def resume(pid: int, threads: Any) -> None:
        seen_at_resume.append(read_launch(state, "a"))
        real_resume(pid, threads)

    jobs.resume = resume  # type: ignore[method-assign]
    config = SupervisorConfig(shards=("a",), command=(sys.executable, "-c", "pass"),
                              state_dir=state.root, remediation=Remediation())
    assert Supervisor(config).run(threading.Event()) == 0
    [launch] = seen_at_resume
    assert launch is not None and launch.job == jobs.calls[0][1]   # its job's name
    assert [c[0] for c in jobs.calls[:3]] == ["create", "assign", "resume"]


def test_created_runs_between_the_job_and_the_resume(jobs: FakeJobs) -> None:
    popen = childproc.spawn([sys.executable, "-c", "pass"], dict(os.environ),
                            created=lambda p: jobs.calls.append(("created", p.pid)))
    popen.wait(10)
    childproc.release(popen)
    assert [c[0] for c in jobs.calls[:4]] == ["create", "assign", "created", "resume"]


def test_a_child_that_cannot_be_resumed_leaves_no_job_handle(jobs: FakeJobs) -> None:
    jobs.fail_resume = True
    with pytest.raises(Exception, match="cannot start"):
        childproc.spawn([sys.executable, "-c", "import time; time.sleep(60)"],
                        dict(os.environ))
    name = jobs.calls[0][1]
    assert [c[0] for c in jobs.calls[:4]] == ["create", "assign", "resume", "close"]
    assert not jobs.jobs   # closed (kill-on-close), and forgotten by childproc:
    assert name not in [job_name for _, job_name in childproc._jobs.values()]


# -- the sweep of a dead run's leftovers ----------------------------------------------------------

def test_the_sweep_holds_a_leftover_and_ends_its_job(jobs: FakeJobs, procs: FakeProcesses,
                                                      tmp_path: Path) -> None:
    popen, worker = launch_wrapper()
    try:
        record = runrecord.RunRecord(tmp_path / "children.json")
        record.add("worker a", popen.pid)
        procs.calls.clear()
        notes = runrecord.sweep(record.path, grace=0.1)
        assert notes == [f"stopped leftover worker a (pid {popen.pid}) of a previous run"]
        checks = [c for c in procs.calls if c[0] != "wait"]
        assert checks[:2] == [("open", popen.pid), ("created", popen.pid)]
        assert ("terminate", next(iter(jobs.jobs))) in jobs.calls
        assert procs.calls[-1] == ("close", popen.pid)
        psutil.wait_procs([worker], timeout=10)
        assert not worker.is_running()
    finally:
        childproc.release(popen)
        popen.wait(10)


def test_the_sweep_never_touches_a_reused_pid(jobs: FakeJobs, procs: FakeProcesses,
                                              tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ident = WorkerIdentity.of_pid(other.pid)
        path = tmp_path / "children.json"
        path.write_text(runrecord.RunFile(pid=1, children=[runrecord.Child(
            name="worker a", pid=other.pid, create_time=ident.create_time - 3)]
            ).model_dump_json())
        assert runrecord.sweep(path, grace=0.1) == []
        assert not [c for c in procs.calls if c[0] == "terminate"]
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


# -- the supervisor says so when the graceful signal found no handler ---------------------------

def test_the_supervisor_says_when_a_worker_died_of_the_default_action(
        tmp_path: Path) -> None:
    # POSIX, for real: a worker without a SIGTERM handler, ended by SIGTERM.
    events: list[SupervisorEvent] = []
    config = SupervisorConfig(
        shards=("a",), state_dir=tmp_path / "state",
        command=(sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"),
        remediation=Remediation(max_futile_restarts=2, gpu_release_timeout=0))
    assert Supervisor(config, on_event=events.append).run(
        threading.Event()) == 3
    told = [e for e in events if e.kind == "no-salvage"]
    assert len(told) == 1 and "no SIGTERM handler ran" in told[0].message
