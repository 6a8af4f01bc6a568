"""No orphans: children die with their supervisor, and leftovers are swept.

Real processes and real signals: a parent killed with SIGKILL takes its child
along (Linux parent-death signal); a run record lets the next run stop what
ignored that signal, by process group, and never a process that merely reuses
a recorded pid; a rung signals the group the supervisor launched even when the
registered worker is the launcher's child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import LaunchRecord, WorkerIdentity, read_launch
from crawlguard.sidecar.actions import restart_worker
from crawlguard.supervisor import childproc, runrecord
from crawlguard.supervisor.loop import Supervisor, SupervisorConfig
from tests.helpers import REPO, Proc, wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and groups")

STUBBORN = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "c = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)']); "
            "print(c.pid, flush=True); time.sleep(120)")
"""Ignores SIGTERM, and so does its child, which shares its process group."""


def gone(*procs: psutil.Process, timeout: float = 10.0) -> bool:
    _, alive = psutil.wait_procs(list(procs), timeout=timeout)
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_a_child_dies_with_its_supervisor_killed_hard() -> None:
    parent = Proc([sys.executable, "-c",
                   "import os, sys, time; from crawlguard.supervisor import childproc; "
                   "p = childproc.spawn([sys.executable, '-c', 'import time; time.sleep(120)'], "
                   "os.environ); print('child', p.pid, flush=True); time.sleep(120)"], cwd=REPO)
    try:
        child = psutil.Process(int(parent.wait_for_line(r"child (\d+)").group(1)))
        os.kill(parent.pid, signal.SIGKILL)
        assert gone(child), "the child outlived its SIGKILLed parent"
    finally:
        parent.stop()


def test_the_next_run_sweeps_leftovers_by_group_and_spares_reused_pids(tmp_path: Path) -> None:
    record = runrecord.RunRecord(tmp_path / "children.json")
    popen = childproc.spawn([sys.executable, "-c", STUBBORN], dict(os.environ),
                            stdout=subprocess.PIPE)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        assert popen.stdout is not None
        grandchild = psutil.Process(int(popen.stdout.readline()))
        record.add("worker a", popen.pid)
        # A pid that was reused since: same pid, another creation time. Never touched.
        ident = WorkerIdentity.of_pid(bystander.pid)
        doc = json.loads(record.path.read_text())
        doc["children"].append({"name": "old", "pid": ident.pid,
                                "create_time": ident.create_time - 50})
        record.path.write_text(json.dumps(doc))
        notes = runrecord.sweep(record.path, grace=0.5)
        assert notes == [f"stopped leftover worker a (process group {popen.pid}) of a "
                         "previous run"]
        assert popen.wait(10) == -signal.SIGKILL  # it ignored SIGTERM: killed after grace
        assert gone(grandchild)
        assert bystander.poll() is None
        assert not record.path.exists()
    finally:
        bystander.kill()
        bystander.wait()
        childproc.stop_gracefully(popen, 0)


def test_a_rung_signals_the_launched_group_when_the_worker_is_the_launchers_child(
        tmp_path: Path) -> None:
    state, out = tmp_path / "st", tmp_path / "sig.txt"
    wrapper = ("import signal, subprocess, sys; out = sys.argv[1]; "
               "signal.signal(signal.SIGTERM, lambda s, f: open(out + '.launcher', 'a')"
               ".write('TERM\\n')); "
               "c = subprocess.Popen([sys.executable, '-m', 'tests.sidecar.worker_child', "
               "*sys.argv[2:]]); sys.exit(c.wait())")
    popen = childproc.spawn([sys.executable, "-c", wrapper, str(out), str(state), "s", str(out)],
                            dict(os.environ), cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert popen.stdout is not None
        worker_pid = int(popen.stdout.readline().split()[1])   # "registered PID"
        assert worker_pid != popen.pid and os.getpgid(worker_pid) == popen.pid
        launch = WorkerIdentity.of_pid(popen.pid)
        result = restart_worker(WorkerIdentity.of_pid(worker_pid), 10,
                                launch=LaunchRecord(pid=launch.pid,
                                                    create_time=launch.create_time))
        assert result.outcome == "signalled", result
        assert out.read_text().startswith("TERM")
        # The whole group got it. The launcher runs its handler when it is next scheduled,
        # which on a loaded machine can be after the worker has exited: wait for it.
        launcher = Path(f"{out}.launcher")
        wait_until(launcher.exists, what="the launcher's SIGTERM handler")
        assert launcher.read_text() == "TERM\n"
        assert popen.wait(10) == 0
    finally:
        childproc.stop_gracefully(popen, 0)


def test_the_supervisor_records_each_launch(tmp_path: Path) -> None:
    config = SupervisorConfig(shards=("a",), command=(sys.executable, "-c", "pass"),
                              state_dir=tmp_path, vram_log_interval=0)
    record = runrecord.RunRecord(tmp_path / "children.json")
    supervisor = Supervisor(config, record=record)
    assert supervisor.run(threading.Event()) == 0
    launch = read_launch(StateDir(tmp_path), "a")
    assert launch is not None and launch.pid == supervisor.runs["a"].pid
    assert json.loads(record.path.read_text())["children"] == []  # exited: forgotten


def test_shards_equal_under_casefold_are_refused_in_one_run(tmp_path: Path) -> None:
    from crawlguard.kernel.errors import UnsafeNameError
    with pytest.raises(UnsafeNameError, match="only in case"):
        SupervisorConfig(shards=("Confluence", "confluence"), command=("x",),
                         state_dir=tmp_path)
