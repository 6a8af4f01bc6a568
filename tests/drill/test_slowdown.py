"""The drill's slowdown on real processes: the worker is stopped and resumed, a stopped
worker still takes a restart's SIGTERM, and the worker runs again however the drill
ends (it ends the cycle, it dies, or the cycle's own process is killed)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crawlguard.drill import slower
from crawlguard.drill.run import Slowdown
from crawlguard.kernel import processes
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import WorkerIdentity
from tests.helpers import wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP, /proc states")

SPINNER = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
print("ready", flush=True)
while True:
    sum(range(1000))
"""


@pytest.fixture
def spinner() -> Iterator[subprocess.Popen[str]]:
    """A busy child in a process group of its own, as the supervisor starts workers."""
    proc = subprocess.Popen([sys.executable, "-c", SPINNER], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
    proc.wait(10)


def stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def identity(proc: subprocess.Popen[str]) -> WorkerIdentity:
    return WorkerIdentity.of_pid(proc.pid)


def test_suspend_and_resume_reach_the_process_group(spinner: subprocess.Popen[str]) -> None:
    with processes.Target(spinner.pid, group=spinner.pid) as target:
        assert target.pin(identity(spinner).create_time) == "ok"
        assert target.suspend()
        wait_until(lambda: stopped(spinner.pid), what="the child stopped")
        assert target.resume()
        wait_until(lambda: not stopped(spinner.pid), what="the child running again")


def test_a_stopped_worker_still_takes_the_graceful_signal(
        spinner: subprocess.Popen[str]) -> None:
    """SIGTERM to a stopped process waits for SIGCONT; a restart rung sends both."""
    with processes.Target(spinner.pid, group=spinner.pid, child=spinner) as target:
        target.pin(identity(spinner).create_time)
        target.suspend()
        wait_until(lambda: stopped(spinner.pid), what="the child stopped")
        result = processes.stop(target, grace=10.0)
    assert result.outcome == "signalled" and spinner.returncode == 7


def test_the_cycle_stops_the_worker_and_always_leaves_it_running(
        spinner: subprocess.Popen[str]) -> None:
    stop = threading.Event()
    seen_stopped: list[bool] = []
    duty = slower.Duty(period=0.05, slowdown=10.0)
    with processes.Target(spinner.pid, group=spinner.pid) as target:
        target.pin(identity(spinner).create_time)
        t = threading.Thread(target=lambda: seen_stopped.append(
            slower.cycle(target, duty, stop, time.time() + 60) == "stopped"))
        t.start()
        wait_until(lambda: stopped(spinner.pid), what="a stop of the duty cycle")
        stop.set()
        t.join(10)
    assert seen_stopped == [True]
    assert not stopped(spinner.pid)  # resumed before the cycle returned (SIGCONT acts at once)
    # Its deadline ends it too, with the worker running.
    with processes.Target(spinner.pid, group=spinner.pid) as target:
        target.pin(identity(spinner).create_time)
        assert slower.cycle(target, duty, threading.Event(), time.time() - 1) == "deadline"
    assert not stopped(spinner.pid)


def start_slowdown(tmp_path: Path, spinner: subprocess.Popen[str]) -> Slowdown:
    slowing = Slowdown(StateDir(tmp_path), "s", identity(spinner),
                       slower.Duty(period=0.05, slowdown=20.0), time.time() + 120)
    slowing.start()
    wait_until(lambda: stopped(spinner.pid), what="the child's first stop")
    return slowing


def test_the_slowdown_child_ends_with_the_worker_running(
        tmp_path: Path, spinner: subprocess.Popen[str]) -> None:
    with start_slowdown(tmp_path, spinner) as slowing:
        assert slowing.group == spinner.pid and slowing.running
        slowing.adjust(slower.Duty(period=0.1, slowdown=50.0))
        assert slowing.duty.slowdown == 50.0
    assert slowing.child is not None and slowing.child.returncode == 0
    assert not stopped(spinner.pid)


def test_a_killed_slowdown_child_leaves_the_worker_running(
        tmp_path: Path, spinner: subprocess.Popen[str]) -> None:
    slowing = start_slowdown(tmp_path, spinner)
    try:
        assert slowing.child is not None
        # SIGKILL while the worker is most likely stopped (it is 95 % of the time).
        slowing.child.kill()
        slowing.child.wait(10)
        assert not slowing.running          # noticed, and the worker resumed from here
        assert "ended with code -9" in slowing.ended
        assert not stopped(spinner.pid)
    finally:
        slowing.end()


def test_a_killed_drill_leaves_the_worker_running(spinner: subprocess.Popen[str]) -> None:
    """The drill dies (SIGKILL): its end of the pipe closes, the child resumes the worker
    and exits, with no one left to tell it."""
    me = identity(spinner)
    drill = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "c = subprocess.Popen([sys.executable, '-m', 'crawlguard.drill.slower', '--pid', "
         f"'{me.pid}', '--create-time', '{me.create_time!r}', '--group', "
         f"'{spinner.pid}', '--period', '0.05', '--slowdown', '20', '--until', "
         f"'{time.time() + 120}'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, "
         "start_new_session=True, text=True)\n"
         "print(c.pid, c.stdout.readline().strip(), flush=True)\n"
         "time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True)
    assert drill.stdout is not None
    child_pid, ready = drill.stdout.readline().split()
    assert ready == slower.READY
    child = psutil.Process(int(child_pid))
    drill.kill()
    drill.wait(10)
    child.wait(10)                          # it noticed the drill's death and ended
    assert not stopped(spinner.pid)


@given(st.text(max_size=60))
def test_any_line_is_a_duty_or_nothing(line: str) -> None:
    duty = slower.Duty.parse(line)
    assert duty is None or (0 < duty.period <= 60 and 1 <= duty.slowdown <= 1000)


def test_duties_and_steering() -> None:
    d = slower.Duty.for_batches(0.4, 10.0)
    assert d.period == pytest.approx(0.1) and d.run_s == pytest.approx(0.01)
    assert slower.Duty.parse(d.line()) == d
    # Tiny batches: the shortest period; big slowdowns: run slices stay 2 ms.
    assert slower.Duty.for_batches(0.001, 10).period == slower.PERIOD_MIN_S
    assert slower.Duty.for_batches(0.4, 500).run_s == pytest.approx(slower.MIN_RUN_S)
    assert slower.Duty.for_batches(100, 2).period == slower.PERIOD_MAX_S
    # A batch at 30 % of its baseline when 10 % was the aim: three times the slowdown.
    steered = slower.steer(d, 0.3, 0.1, 0.4)
    assert steered is not None and steered.slowdown == pytest.approx(30.0)
    assert slower.steer(d, 0.14, 0.1, 0.4) is None           # close enough
    top = slower.Duty.for_batches(0.4, slower.MAX_SLOWDOWN)
    assert slower.steer(top, 0.9, 0.1, 0.4) is None          # nothing left to raise
