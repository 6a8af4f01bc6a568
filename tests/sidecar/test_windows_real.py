"""The Windows branches on a real Windows (the CI lane); skipped everywhere else.

Nothing is faked here: real Job Objects, real TerminateJobObject, real socket
options. What needs a console shared with a GPU worker (CTRL_BREAK_EVENT
reaching the launched group, QuickEdit, the PDH source) is checked by hand on a
rig: docs/windows-acceptance.md.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import psutil
import pytest

from crawlguard.kernel import listen, longpaths
from crawlguard.supervisor import childproc

pytestmark = pytest.mark.skipif(sys.platform != "win32", reason="real Windows only")

WRAPPER = ("import subprocess, sys; "
           "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
           "print(c.pid, flush=True); sys.exit(c.wait())")


STUBBORN = ("import signal, subprocess, sys; signal.signal(signal.SIGBREAK, signal.SIG_IGN); "
            "c = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGBREAK, signal.SIG_IGN); time.sleep(60)']); "
            "print(c.pid, flush=True); sys.exit(c.wait())")
"""A launcher and its child that both ignore CTRL_BREAK_EVENT: only the hard kill ends them."""


def launch(code: str = WRAPPER) -> tuple[subprocess.Popen[bytes], psutil.Process]:
    popen = childproc.spawn([sys.executable, "-c", code], dict(os.environ),
                            stdout=subprocess.PIPE)
    assert popen.stdout is not None
    return popen, psutil.Process(int(popen.stdout.readline()))


def test_the_hard_kill_ends_the_launchers_child_too() -> None:
    popen, worker = launch(STUBBORN)
    try:
        assert childproc.job_of(popen) is not None
        assert childproc.stop_gracefully(popen, grace=0.5) != 0  # the job's exit code
        _, alive = psutil.wait_procs([worker], timeout=10)
        assert not alive
    finally:
        childproc.release(popen)
        if worker.is_running():
            worker.kill()


def test_closing_the_job_ends_what_is_left() -> None:
    popen, worker = launch()
    try:
        childproc.release(popen)   # what happens when the supervisor dies: handles close
        _, alive = psutil.wait_procs([worker], timeout=10)
        assert not alive
    finally:
        popen.wait(10)


def test_a_second_listener_on_the_port_is_refused() -> None:
    first = socket.socket()
    listen.set_listen_options(first)
    first.bind(("127.0.0.1", 0))
    first.listen()
    second = socket.socket()
    try:
        second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what a stale one did
        with pytest.raises(OSError):
            second.bind(first.getsockname())
    finally:
        second.close()
        first.close()


def test_the_long_paths_setting_can_be_read() -> None:
    assert longpaths.long_paths_enabled() in (True, False)
