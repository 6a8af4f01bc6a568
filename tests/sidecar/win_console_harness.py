"""Scenarios that need a console of their own, run by tests/sidecar/test_windows_real.py.

A CI runner's test process may have no console, or share one with the runner:
GenerateConsoleCtrlEvent reaches only processes attached to the caller's
console, and a break that went wrong would hit the runner. So the test starts
this script with CREATE_NEW_CONSOLE (hidden), it runs one scenario against real
crawlguard code and real processes in that console, and writes what it saw as
JSON to the path it was given. Windows only.

    python win_console_harness.py SCENARIO OUT.json [ARG]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crawlguard.kernel import processes, winconsole, winjob
from crawlguard.kernel.workers import LaunchRecord, WorkerIdentity
from crawlguard.sidecar.actions import restart_worker
from crawlguard.supervisor import childproc

WORKER = """\
import os, signal, sys, time
marker = sys.argv[1]
def salvage(signum, frame):
    with open(marker, "w") as fh:
        fh.write(str(os.getpid()))
    sys.exit(0)
if sys.argv[2] == "handler":
    signal.signal(signal.SIGBREAK, salvage)
elif sys.argv[2] == "ignore":
    signal.signal(signal.SIGBREAK, signal.SIG_IGN)
print(os.getpid(), flush=True)   # ready: the handler is in place
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    time.sleep(0.05)
"""
"""A worker: ``handler`` salvages (writes its pid to the marker) on SIGBREAK and exits 0,
``ignore`` ignores it, ``none`` has Python's default (Windows ends it at once)."""

got_break: list[int] = []


def _on_break(signum: int, frame: Any) -> None:
    got_break.append(signum)


def start(argv: list[str], marker: Path, mode: str) -> tuple[subprocess.Popen[bytes], int]:
    """A worker through ``childproc.spawn`` (its own group, its own job); its pid once
    it is ready (a launcher's child may have another pid)."""
    popen = childproc.spawn([*argv, "-c", WORKER, str(marker), mode], dict(os.environ),
                            stdout=subprocess.PIPE)
    assert popen.stdout is not None
    return popen, int(popen.stdout.readline())


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def group_break(tmp: Path, _arg: str) -> dict[str, Any]:
    """A CTRL_BREAK_EVENT to one group reaches that group only."""
    a, _ = start([sys.executable], tmp / "a", "handler")
    b, _ = start([sys.executable], tmp / "b", "handler")
    try:
        with processes.Target(a.pid, group=a.pid, child=a) as target:
            stopped = processes.stop(target, 30)
        b_alive_after_a = b.poll() is None
        with processes.Target(b.pid, group=b.pid, child=b) as target:
            stopped_b = processes.stop(target, 30)
        return {"a": stopped.outcome, "a_code": a.returncode,
                "a_salvaged": (tmp / "a").is_file(), "b_alive_after_a": b_alive_after_a,
                "b": stopped_b.outcome, "harness_got_break": bool(got_break)}
    finally:
        for p in (a, b):
            childproc.stop_gracefully(p, 0)


def venv_launcher(tmp: Path, venv_python: str) -> dict[str, Any]:
    """A venv's Scripts\\python.exe starts the real interpreter as its child: the break
    to the launcher's group stops the child gracefully; the job's kill ends both."""
    out: dict[str, Any] = {}
    popen, worker = start([venv_python], tmp / "w1", "handler")
    out["launcher_pid"], out["worker_pid"] = popen.pid, worker
    out["job"] = childproc.job_of(popen)
    out["graceful_code"] = childproc.stop_gracefully(popen, 30)
    out["salvaged"] = (tmp / "w1").read_text() if (tmp / "w1").is_file() else None
    popen, worker = start([venv_python], tmp / "w2", "ignore")
    out["stubborn_code"] = childproc.stop_gracefully(popen, 1)
    out["stubborn_worker_gone"] = wait_for(lambda: processes.look(worker) is None, 15)
    return out


def rung(tmp: Path, venv_python: str) -> dict[str, Any]:
    """The sidecar's restart rung, for real: pinned handles, the break to the launch's
    group, the worker (the launcher's child) salvaging; then a worker without a handler,
    whose exit status says that nothing was salvaged."""
    out: dict[str, Any] = {}
    for name, mode in (("handler", "handler"), ("none", "none")):
        popen, worker = start([venv_python], tmp / name, mode)
        try:
            ident = WorkerIdentity.of_pid(popen.pid)
            launch = LaunchRecord(pid=ident.pid, create_time=ident.create_time,
                                  job=childproc.job_of(popen))
            result = restart_worker(WorkerIdentity.of_pid(worker), grace_seconds=30,
                                    launch=launch)
            out[name] = {"outcome": result.outcome, "detail": result.detail,
                         "salvaged": (tmp / name).is_file()}
        finally:
            childproc.stop_gracefully(popen, 0)
    out["harness_got_break"] = bool(got_break)
    return out


def quick_edit(tmp: Path, _arg: str) -> dict[str, Any]:
    con = winconsole.api()
    handle = con.open_input()
    assert handle is not None, "the harness runs in a console of its own"
    try:
        start_mode = con.get_mode(handle)
        assert start_mode is not None
        con.set_mode(handle, start_mode | winconsole.ENABLE_QUICK_EDIT_MODE
                     | winconsole.ENABLE_EXTENDED_FLAGS)
        before = con.get_mode(handle)
        with winconsole.quick_edit_off() as switched:
            during = con.get_mode(handle)
        after = con.get_mode(handle)
        return {"switched": switched, "before": before, "during": during, "after": after}
    finally:
        con.close(handle)


SCENARIOS = {"group_break": group_break, "venv_launcher": venv_launcher, "rung": rung,
             "quick_edit": quick_edit}


def main() -> int:
    scenario, out_path = sys.argv[1], Path(sys.argv[2])
    arg = sys.argv[3] if len(sys.argv) > 3 else ""
    signal.signal(signal.SIGBREAK, _on_break)
    try:
        result = SCENARIOS[scenario](out_path.parent, arg)
        result["jobs_api"] = type(winjob.api()).__name__
    except BaseException as exc:  # reported, not lost in a hidden console
        import traceback

        result = {"error": "".join(traceback.format_exception(exc))}
    out_path.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
