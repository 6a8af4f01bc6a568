"""Processes as the OS reports them, and the one way crawlguard stops one.

The one module that talks psutil. Its errors are translated here: a process
that is gone is an answer (``None``, ``False``), one that cannot be inspected
(access denied) is ``ProcessError``. Worker identity (pid AND creation time,
``crawlguard.kernel.workers``) is built on ``look``.

**Creation times.** Two psutil readings of one process agree within
``CREATE_TIME_TOLERANCE_S``; a reused pid starts at least a scheduler tick
later. Against a wall clock (``time.time()``, an alert's ``startsAt``) a
creation time may be early by up to ``CREATE_TIME_EARLY_S``, never late:
Linux derives it from the boot time in /proc/stat, which is whole seconds
rounded down, plus start ticks rounded down to 10 ms. Code that compares the
two must be right for any earliness up to that bound (docs/architecture.md,
"Creation times and clocks", lists each place).

**Stopping** (``stop``; used by the sidecar's restart rung, the supervisor's
children and the sweep of a dead run's leftovers): the graceful signal, up to
a grace period for the build's salvage, the hard kill, then a bounded wait
(``KILL_WAIT_S``) for the process to disappear.

- POSIX: SIGTERM (followed by SIGCONT, so that a stopped process takes it), then
  SIGKILL, to the ``Target``'s process group, never to this process's own group;
  without a group (or once the group is gone) to the process alone, through its
  pidfd when it is pinned (Linux).
- Windows: CTRL_BREAK_EVENT to the process *group* id, which only a group
  created with CREATE_NEW_PROCESS_GROUP has; a pid that is no group id makes
  GenerateConsoleCtrlEvent act like group 0, every process on the console
  (Windows Terminal issue #335), so without a known group no graceful signal is
  sent and the target is killed at once. The hard kill is TerminateJobObject
  on the target's Job Object (the whole tree, ``winjob``); without one,
  TerminateProcess of the target and of ``also`` (a launcher above it).

**Holding** (``Target.suspend`` / ``resume``; ``crawlguard drill``'s duty cycle):
SIGSTOP / SIGCONT to the same group or process as the stop above; on Windows
NtSuspendProcess / NtResumeProcess (psutil's ``suspend`` / ``resume``) of the
pinned process.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import psutil

from . import winjob
from .errors import ProcessError
from .logs import get_logger

log = get_logger(__name__)

CREATE_TIME_TOLERANCE_S = 0.005
"""Two readings of one process's creation time agree within this (Linux: boot time +
start ticks; Windows: a 100 ns FILETIME), while a reused pid starts a tick later."""
CREATE_TIME_EARLY_S = 1.02
"""How much earlier than the wall clock at its start a process's creation time may read:
Linux's boot time is whole seconds rounded down (< 1 s) and the start ticks 10 ms
rounded down. Never later than the wall clock."""
KILL_WAIT_S = 10.0
"""How long to wait for a hard-killed process to disappear before reporting it anyway."""
GROUP_POLL_S = 0.05


@dataclass(frozen=True)
class Seen:
    """One reading of a living process."""

    pid: int
    create_time: float
    zombie: bool
    """Exited, waiting for its parent to reap it: for anyone else, it is gone."""


def look(pid: int) -> Seen | None:
    """The process ``pid`` now; None when there is none. ProcessError: cannot inspect."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():  # one read of /proc/<pid>/stat for both answers
            return Seen(pid, proc.create_time(), proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return None
    except (psutil.Error, OSError) as exc:
        raise ProcessError(f"cannot inspect pid {pid}: {exc}") from exc


def ancestors(pid: int) -> list[tuple[int, float]]:
    """(pid, creation time) of each living ancestor of ``pid``; [] when unknown."""
    try:
        return [(p.pid, p.create_time()) for p in psutil.Process(pid).parents()]
    except (psutil.Error, OSError):
        return []


def thread_ids(pid: int) -> list[int]:
    """The threads of ``pid`` (to resume a child created suspended, Windows)."""
    try:
        return [t.id for t in psutil.Process(pid).threads()]
    except (psutil.Error, OSError) as exc:
        raise ProcessError(f"cannot list the threads of pid {pid}: {exc}") from exc


def group_of(pid: int) -> int | None:
    """The POSIX process group of ``pid``; None on Windows or when it is gone."""
    if sys.platform == "win32":
        return None
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` (zombies aside) still runs (POSIX).

    A group outlives its leader while any member runs, and its id is never handed
    out again meanwhile: signalling it reaches only those members."""
    if sys.platform == "win32":
        return False
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


def _kill_pid(pid: int) -> None:
    """TerminateProcess / SIGKILL of ``pid`` alone; a process already gone is no error."""
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).kill()


# -- stopping -----------------------------------------------------------------------------

Outcome = Literal["signalled", "killed", "gone"]


@dataclass(frozen=True)
class Stopped:
    outcome: Outcome
    graceful: bool
    """Whether the graceful signal went out (False: impossible, the hard kill came at once)."""


class Target:
    """One process to stop, with what reaches its whole tree.

    ``group``: the process group to signal (POSIX pgid, Windows group id); None for
    the process alone. ``job``: its Windows Job Object, by name (made by another
    process) or handle (ours). ``also``: on Windows without a job, more processes
    to terminate (its launcher). ``child``: our own child, waited on (and reaped)
    through its Popen. ``whole_group``: the stop is done when every process of
    the group is gone, not just ``pid`` (the leftovers of a dead run).
    Use it as a context manager: ``pin`` holds a pidfd that ``__exit__`` closes.
    """

    def __init__(self, pid: int, *, group: int | None = None, job: str | int | None = None,
                 also: Sequence[int] = (), child: subprocess.Popen[bytes] | None = None,
                 whole_group: bool = False) -> None:
        self.pid = pid
        self.group = group
        self.job = job
        self.also = tuple(also)
        self.child = child
        self.whole_group = whole_group
        self._proc: psutil.Process | None = None
        self._pidfd: int | None = None

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def pin(self, create_time: float) -> Literal["ok", "gone", "mismatch"]:
        """Hold on to the process created at ``create_time``: from here on no signal can
        reach a process that takes over the pid (a pidfd on Linux, psutil elsewhere).
        ``mismatch``: another process has the pid, or it cannot be verified."""
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            with contextlib.suppress(OSError):
                self._pidfd = pidfd_open(self.pid)
        try:
            # Checked after the pidfd exists: the pid cannot change hands any more.
            proc = psutil.Process(self.pid)
            created = proc.create_time()
        except psutil.NoSuchProcess:
            return "gone"
        except (psutil.Error, OSError):
            return "mismatch"  # cannot verify (e.g. access denied): never signal
        if abs(created - create_time) > CREATE_TIME_TOLERANCE_S:
            return "mismatch"
        self._proc = proc
        return "ok"

    def _group(self) -> int | None:
        if self.group is None or sys.platform == "win32":
            return self.group
        return None if self.group == os.getpgrp() else self.group

    def _signal_process(self, sig: int) -> None:
        """``sig`` to the process alone; ProcessLookupError when it is gone."""
        if self._pidfd is not None:
            if sys.platform != "win32":  # pidfds are Linux's
                signal.pidfd_send_signal(self._pidfd, sig)
        elif self.child is not None:
            if self.child.poll() is not None:
                raise ProcessLookupError(self.pid)
            self.child.send_signal(sig)
        elif self._proc is not None:
            try:
                self._proc.send_signal(sig)
            except psutil.NoSuchProcess as exc:
                raise ProcessLookupError(self.pid) from exc
        else:
            os.kill(self.pid, sig)

    def terminate(self) -> bool | None:
        """The graceful signal: True sent, False impossible, None already gone."""
        try:
            if sys.platform == "win32":
                if self.group is None:
                    return False  # no known group: a break could reach the whole console
                os.kill(self.group, signal.CTRL_BREAK_EVENT)
                return True
            group = self._group()
            if group is not None:
                try:
                    os.killpg(group, signal.SIGTERM)
                    # A stopped process (a drill's slowdown, a Ctrl+Z) takes SIGTERM only
                    # once continued; to a running one SIGCONT does nothing.
                    os.killpg(group, signal.SIGCONT)
                    return True
                except ProcessLookupError:
                    pass  # the group is gone (the process left it): the process alone
            self._signal_process(signal.SIGTERM)
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                self._signal_process(signal.SIGCONT)
            return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            return None
        except (OSError, psutil.Error) as exc:
            log.warning("graceful signal to pid %s failed: %s", self.pid, exc)
            return False

    def suspend(self) -> bool:
        """Stop the target running until ``resume`` (``crawlguard drill``'s slowdown):
        SIGSTOP to its group (never ours) or to the process alone (POSIX); on Windows,
        through psutil, NtSuspendProcess of the process (every thread of it). False
        when it is gone; ``ProcessError`` when it cannot be done."""
        return self._hold(True)

    def resume(self) -> bool:
        """Let a suspended target run again (SIGCONT; NtResumeProcess). False when gone."""
        return self._hold(False)

    def _hold(self, stop: bool) -> bool:
        try:
            if sys.platform == "win32":
                proc = self._proc or psutil.Process(self.pid)
                if stop:
                    proc.suspend()
                else:
                    proc.resume()
                return True
            sig = signal.SIGSTOP if stop else signal.SIGCONT
            group = self._group()
            if group is not None:
                try:
                    os.killpg(group, sig)
                    return True
                except ProcessLookupError:
                    pass
            self._signal_process(sig)
            return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            return False
        except (OSError, psutil.Error) as exc:
            raise ProcessError(f"cannot {'suspend' if stop else 'resume'} pid {self.pid}: "
                               f"{exc}") from exc

    def kill(self) -> None:
        """The hard kill of the group, the job, or the process alone."""
        try:
            if sys.platform == "win32":
                self._kill_windows()
                return
            group = self._group()
            if group is not None:
                try:
                    os.killpg(group, signal.SIGKILL)
                    return
                except ProcessLookupError:
                    pass
            self._signal_process(signal.SIGKILL)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
        except (OSError, psutil.Error) as exc:
            log.error("hard kill of pid %s failed: %s", self.pid, exc)

    def _kill_windows(self) -> None:
        if isinstance(self.job, str) and winjob.api().terminate_named(self.job):
            return
        if isinstance(self.job, int):
            winjob.api().terminate(self.job)  # the whole tree, not the launcher alone
            return
        if self.child is not None:
            if self.child.poll() is None:
                self.child.kill()
        elif self._proc is not None:
            self._proc.kill()  # TerminateProcess: this process only
        else:
            _kill_pid(self.pid)
        for pid in self.also:
            # A launcher would exit with its child anyway; ending it now keeps the
            # supervisor from waiting on it.
            with contextlib.suppress(psutil.Error, OSError):
                _kill_pid(pid)

    def wait(self, timeout: float) -> bool:
        """True once the target has exited (a zombie counts), False after ``timeout``."""
        deadline = time.monotonic() + max(0.0, timeout)
        if self.whole_group and self.group is not None:
            while group_alive(self.group):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(GROUP_POLL_S)
            return True
        if self.child is not None:
            try:
                self.child.wait(timeout=max(0.0, timeout))
                return True
            except subprocess.TimeoutExpired:
                return False
        if self._pidfd is not None:
            # A pidfd turns readable when the process terminates: exact, no polling.
            # (pidfds exist on Linux only: mypy --platform win32 knows no select.poll.)
            poller = select.poll()  # type: ignore[attr-defined,unused-ignore]
            poller.register(self._pidfd, select.POLLIN)  # type: ignore[attr-defined,unused-ignore]
            return bool(poller.poll(max(0.0, timeout) * 1000))
        try:
            proc = self._proc or psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return True
        while True:
            try:
                proc.wait(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
                return True
            except psutil.TimeoutExpired:
                # Only the parent can reap a zombie; for us it is gone.
                with contextlib.suppress(psutil.Error):
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        return True
                if time.monotonic() >= deadline:
                    return False
            except psutil.NoSuchProcess:
                return True


def stop(target: Target, grace: float) -> Stopped:
    """The graceful signal, up to ``grace`` seconds to exit, then the hard kill and up to
    ``KILL_WAIT_S`` for the target to disappear (logged when it does not)."""
    sent = target.terminate()
    if sent is None:
        return Stopped("gone", False)
    if sent and target.wait(grace):
        return Stopped("signalled", True)
    target.kill()
    if not target.wait(KILL_WAIT_S):
        log.error("pid %s survived the hard kill for %gs", target.pid, KILL_WAIT_S)
    return Stopped("killed", sent)
