"""The Windows branches, run here with the platform faked at the OS boundary.

No Windows machine is available, so these check what crawlguard asks of the OS
there: workers start in their own process group (CREATE_NEW_PROCESS_GROUP),
the graceful signal is CTRL_BREAK_EVENT to that group, and the hard kill after
the grace period still follows. Whether Windows delivers CTRL_BREAK_EVENT is
checked on a real Windows by tests/sidecar/test_windows_real.py (the CI lane)
and on a rig by docs/windows-acceptance.md.

Real processes stand in for Windows ones; what is faked is exactly the OS
boundary (tests/winfakes.py): ``sys.platform``, the Job Object API
(``FakeJobs``: a job holds a process and everything it starts, as a real job
does), the process-handle API (``FakeProcesses``) and ``os.kill`` for
CTRL_BREAK_EVENT, which is recorded, not delivered.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

from crawlguard.cli import lifecycle
from crawlguard.kernel import listen, longpaths, winjob, winproc
from crawlguard.kernel.errors import ConfigError, ProcessError, UnsafeNameError
from crawlguard.kernel.statedir import StateDir, write_volatile_json
from crawlguard.kernel.workers import LaunchRecord, WorkerIdentity
from crawlguard.sidecar.actions import restart_worker
from crawlguard.supervisor import childproc
from tests.winfakes import CTRL_BREAK, FakeJobs, FakeProcesses, PosixPopen

# On a real Windows runner nothing is faked: tests/sidecar/test_windows_real.py runs there.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fakes Windows on POSIX")


def test_a_worker_leads_its_own_process_group(windows: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, argv: list[str], **kwargs: Any) -> None:
            seen.update(kwargs, argv=argv)

        pid = os.getpid()
        _handle = 1

    monkeypatch.setattr(subprocess, "Popen", Recorder)
    old = winjob.set_api(FakeJobs())
    try:
        childproc.spawn(["python", "build.py", "--shard", "confluence"], {"A": "1"})
    finally:
        winjob.set_api(old)
    # Its own group, suspended until it is in its job, and NORMAL priority whatever ours
    # is (a Scheduled Task runs at BELOW_NORMAL, which a child would otherwise inherit).
    assert seen["creationflags"] == 0x200 | winjob.CREATE_SUSPENDED | winproc.NORMAL_PRIORITY_CLASS
    assert seen["creationflags"] == 0x224
    assert "start_new_session" not in seen
    assert seen["argv"] == ["python", "build.py", "--shard", "confluence"]  # no shell


def test_the_supervisors_graceful_stop_is_ctrl_break_to_the_childs_group(
        jobs: FakeJobs, no_break: list[tuple[int, int]]) -> None:
    popen = childproc.spawn([sys.executable, "-c", "import time; time.sleep(60)"],
                            dict(os.environ))
    job = next(iter(jobs.jobs))
    # The break is recorded, not delivered (this is not Windows): the job's kill follows.
    assert childproc.stop_gracefully(popen, grace=0.2) != 0
    # The child leads the group the supervisor created for it: its pid is the group id.
    assert [c for c in no_break if c[1] == CTRL_BREAK] == [(popen.pid, CTRL_BREAK)]
    assert ("terminate", job) in jobs.calls and ("close", job) in jobs.calls


def test_a_rung_sends_ctrl_break_to_the_verified_worker_then_hard_kills(
        procs: FakeProcesses, monkeypatch: pytest.MonkeyPatch) -> None:
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
        # Launched directly: the launch record names the worker itself.
        launch = LaunchRecord(pid=identity.pid, create_time=identity.create_time, job=None)
        result = restart_worker(identity, grace_seconds=0.3, launch=launch)
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


# -- Job Objects, launchers and the group the rung signals -----------------------------------

WRAPPER = ("import subprocess, sys; "
           "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
           "print(c.pid, flush=True); sys.exit(c.wait())")
"""A launcher like a venv's Scripts\\python.exe: the real worker is its child."""


def launch_wrapper(jobs: FakeJobs) -> tuple[subprocess.Popen[bytes], psutil.Process]:
    popen = childproc.spawn([sys.executable, "-c", WRAPPER], dict(os.environ),
                            stdout=subprocess.PIPE)
    assert popen.stdout is not None
    worker = psutil.Process(int(popen.stdout.readline()))
    return popen, worker


def reap(*procs: psutil.Process) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue


def test_each_child_is_created_suspended_put_in_its_job_then_resumed(jobs: FakeJobs) -> None:
    popen, worker = launch_wrapper(jobs)
    try:
        name = winjob.job_name(WorkerIdentity.of_pid(popen.pid).key)
        assert popen.creationflags == (  # type: ignore[attr-defined]
            0x200 | winjob.CREATE_SUSPENDED | winproc.NORMAL_PRIORITY_CLASS)
        # In this order: it cannot start a grandchild outside the job.
        assert [c[0] for c in jobs.calls] == ["create", "assign", "resume"]
        assert jobs.calls[0] == ("create", name) and childproc.job_of(popen) == name
    finally:
        childproc.stop_gracefully(popen, 0)
        childproc.release(popen)
        reap(worker)


def test_a_wrappers_child_survives_terminate_process_but_not_the_job(
        jobs: FakeJobs) -> None:
    # Without a job (e.g. nesting refused): TerminateProcess ends the launcher only.
    jobs.fail_create = True
    popen, worker = launch_wrapper(jobs)
    try:
        assert childproc.job_of(popen) is None and ("resume", popen.pid) in jobs.calls
        childproc.stop_gracefully(popen, 0)
        assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
    finally:
        reap(worker)
    # With its job: the hard kill ends the tree.
    jobs.fail_create = False
    popen, worker = launch_wrapper(jobs)
    try:
        childproc.stop_gracefully(popen, 0)
        psutil.wait_procs([worker], timeout=10)
        assert not worker.is_running()
    finally:
        childproc.release(popen)
        reap(worker)


def test_a_child_that_cannot_be_resumed_is_killed_not_left_suspended(
        jobs: FakeJobs, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[subprocess.Popen[bytes]] = []
    real = PosixPopen

    def recording(args: Any, **kwargs: Any) -> PosixPopen:
        popen = real(args, **kwargs)
        started.append(popen)
        return popen

    monkeypatch.setattr(subprocess, "Popen", recording)
    jobs.fail_resume = True
    with pytest.raises(ProcessError, match="cannot start"):
        childproc.spawn([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ))
    assert started and started[0].poll() is not None


def test_closing_a_job_ends_what_the_child_left_behind(jobs: FakeJobs) -> None:
    popen, worker = launch_wrapper(jobs)
    try:
        handle = next(iter(jobs.jobs))
        childproc.release(popen)  # the supervisor forgets it (or dies): kill-on-close
        assert ("close", handle) in jobs.calls
        psutil.wait_procs([worker], timeout=10)
        assert not worker.is_running()
    finally:
        popen.wait(10)
        reap(worker)


def test_a_rung_breaks_the_launched_group_not_the_registered_pid_and_kills_the_job(
        jobs: FakeJobs, no_break: list[tuple[int, int]]) -> None:
    popen, worker = launch_wrapper(jobs)
    try:
        launch = WorkerIdentity.of_pid(popen.pid)
        record = LaunchRecord(pid=launch.pid, create_time=launch.create_time,
                              job=childproc.job_of(popen))
        registered = WorkerIdentity.of_pid(worker.pid)  # what the worker registers
        result = restart_worker(registered, grace_seconds=0.3, launch=record)
        # The break went to the group the supervisor created (the launcher's pid), never to
        # the worker's pid, which is no group id: Windows would treat it as group 0.
        assert [c for c in no_break if c[1] == CTRL_BREAK] == [(popen.pid, CTRL_BREAK)]
        assert result.outcome == "killed"
        assert ("terminate", next(iter(jobs.jobs))) in jobs.calls
        psutil.wait_procs([worker], timeout=10)
        assert not worker.is_running()
        assert popen.wait(10) != 0
    finally:
        childproc.release(popen)
        reap(worker)


@pytest.mark.parametrize("launch", ["none", "unrelated"])
def test_without_a_verified_launch_no_break_is_sent_on_windows(
        launch: str, jobs: FakeJobs, no_break: list[tuple[int, int]]) -> None:
    popen, worker = launch_wrapper(jobs)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = None
        if launch == "unrelated":  # alive, but not the worker nor an ancestor of it
            ident = WorkerIdentity.of_pid(other.pid)
            record = LaunchRecord(pid=ident.pid, create_time=ident.create_time, job=None)
        result = restart_worker(WorkerIdentity.of_pid(worker.pid), grace_seconds=5,
                                launch=record)
        assert not [c for c in no_break if c[1] == CTRL_BREAK]   # nothing to the console
        assert result.outcome == "killed" and "impossible" in result.detail
        psutil.wait_procs([worker], timeout=10)
        assert not worker.is_running()
        assert other.poll() is None  # the unrelated process was left alone
    finally:
        other.kill()
        other.wait()
        childproc.stop_gracefully(popen, 0)
        childproc.release(popen)
        reap(worker)


def test_sigbreak_stops_a_long_running_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # Python delivers CTRL_BREAK_EVENT as SIGBREAK; SIGUSR1 stands in for it here.
    monkeypatch.setattr(signal, "SIGBREAK", signal.SIGUSR1, raising=False)
    with lifecycle.shutdown_on_signals() as stop:
        waiter = threading.Thread(target=lambda: os.kill(os.getpid(), signal.SIGUSR1))
        waiter.start()
        lifecycle.wait_for_stop(stop)  # returns: the handler ran during the timed wait
        waiter.join(5)
    assert stop.is_set()


# -- files, ports, names, paths ----------------------------------------------------------------

def test_atomic_writes_retry_a_sharing_violation(windows: None, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace
    failures = [PermissionError(32, "being used by another process")] * 2

    def replace(src: str, dst: Any) -> None:
        if failures:
            raise failures.pop()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_volatile_json(tmp_path / "vram.json", {"gpus": []})  # simgpu's writer
    assert (tmp_path / "vram.json").read_text().strip() == '{\n  "gpus": []\n}'


class RecordingSocket:
    def __init__(self) -> None:
        self.options: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options.append((level, option, value))


class DrainingPort(RecordingSocket):
    """A port whose previous owner's connections are in TIME_WAIT: an exclusive bind is
    refused with WSAEADDRINUSE, a plain one succeeds; ``listener``: someone listens."""

    def __init__(self, listener: bool = False) -> None:
        super().__init__()
        self.listener = listener
        self.binds: list[bool] = []

    def bind(self, address: Any) -> None:
        exclusive = dict(((lvl, opt), v) for lvl, opt, v in self.options).get(
            (socket.SOL_SOCKET, listen.SO_EXCLUSIVEADDRUSE), 0) == 1
        self.binds.append(exclusive)
        if exclusive or self.listener:
            raise OSError(listen.WSAEADDRINUSE, "Only one usage of each socket address")


def test_a_restarted_server_takes_its_port_while_old_connections_drain(
        windows: None) -> None:
    sock = DrainingPort()
    listen.bind(sock, ("127.0.0.1", 9848))  # type: ignore[arg-type]
    assert sock.options == [(socket.SOL_SOCKET, listen.SO_EXCLUSIVEADDRUSE, 1),
                            (socket.SOL_SOCKET, listen.SO_EXCLUSIVEADDRUSE, 0)]
    assert sock.binds == [True, False]   # exclusive first, then without it
    live = DrainingPort(listener=True)
    with pytest.raises(OSError, match="Only one usage"):
        listen.bind(live, ("127.0.0.1", 9848))  # type: ignore[arg-type]
    assert live.binds == [True, False]   # a second server on the port is still refused


def test_listeners_use_exclusive_address_on_windows(windows: None) -> None:
    sock = RecordingSocket()
    listen.set_listen_options(sock)  # type: ignore[arg-type]
    assert sock.options == [(socket.SOL_SOCKET, listen.SO_EXCLUSIVEADDRUSE, 1)]
    assert all(opt != socket.SO_REUSEADDR for _, opt, _ in sock.options)


def test_shard_names_equal_under_casefold_share_nothing(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure(state.shard_dir("Confluence"))
    assert state.shard_dir("Confluence").name == "Confluence"
    with pytest.raises(UnsafeNameError, match="only in case"):
        StateDir(tmp_path).shard_dir("confluence")
    with pytest.raises(UnsafeNameError, match="only in case"):
        StateDir(tmp_path).shard_dir("CONFLUENCE")
    state.ensure(StateDir(tmp_path).shard_dir("jira"))  # others are fine


@pytest.fixture
def short_paths(windows: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(longpaths, "long_paths_enabled", lambda: False)


def test_long_paths_are_checked_at_start(short_paths: None) -> None:
    # The default C:\\ProgramData\\crawlguard\\state: 128-character names never fit.
    note = longpaths.check_state_dir(Path("/ProgramData/crawlguard/state"))
    assert note and "LongPathsEnabled" in note and "longer than" in note
    with pytest.raises(ConfigError, match="LongPathsEnabled"):
        longpaths.check_state_dir(Path("/" + "d" * 200))


def test_names_that_would_pass_max_path_are_refused_not_missed(short_paths: None,
                                                               tmp_path: Path) -> None:
    state = StateDir(Path("/ProgramData/crawlguard/state") / ("d" * 100))
    state.shard_dir("confluence")
    state.baseline_file("confluence", "embed", "cuda:0")
    with pytest.raises(UnsafeNameError, match="LongPathsEnabled"):
        state.shard_dir("s" * 128)
    with pytest.raises(UnsafeNameError, match="LongPathsEnabled"):
        state.baseline_file("confluence", "e" * 128, "cuda:0")


def test_long_paths_enabled_lifts_the_limits(windows: None, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(longpaths, "long_paths_enabled", lambda: True)
    assert longpaths.check_state_dir(Path("/" + "d" * 200)) is None
    StateDir(tmp_path).baseline_file("s" * 128, "e" * 128, "cuda:0")
