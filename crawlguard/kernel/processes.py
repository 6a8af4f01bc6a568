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
  TerminateProcess of the target and of the group's leader (a launcher above it).

**Pinning.** No signal goes to a pid that could have changed hands since its
identity was checked. ``Target.pin`` holds the process first and compares its
creation time after: a pidfd on Linux (``pidfd_send_signal``); on Windows a
process handle (``winproc``: Windows never hands out a pid while a handle to
its process is open), for the target *and* the leader of the group the break
goes to, read through those handles (``GetProcessTimes``), kept until the
break, the wait and ``TerminateProcess`` on the handle are done. On Windows a
break or a kill by pid alone is never sent: our own child is pinned by its
``Popen`` (which holds its handle until it is reaped), anything else must be
pinned. Elsewhere (macOS) psutil checks the creation time just before it
signals; the gap left there is documented, not closed.

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
from dataclasses import dataclass
from typing import Literal

import psutil

from . import winjob, winproc
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
WAIT_SLICE_S = 0.1
"""A wait in a foreign call (Windows) is cut into slices this long."""


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


def priority_class(pid: int | None = None) -> int | None:
    """Windows: the priority class of ``pid`` (default: this process), as
    GetPriorityClass reports it; None elsewhere or when it cannot be read."""
    if sys.platform != "win32":
        return None
    try:
        return int(psutil.Process(pid).nice())
    except (psutil.Error, OSError):
        return None


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


# -- stopping -----------------------------------------------------------------------------

Outcome = Literal["signalled", "killed", "gone"]


@dataclass(frozen=True)
class Stopped:
    outcome: Outcome
    graceful: bool
    """Whether the graceful signal went out (False: impossible, the hard kill came at once)."""
    exit_code: int | None = None
    """Its exit status where this process can read it (our child; Windows, through the
    pinned handle); None elsewhere or while unknown."""


class Target:
    """One process to stop, with what reaches its whole tree.

    ``group``: the process group to signal (POSIX pgid, Windows group id); None for
    the process alone. ``group_created``: the creation time of the group's leader
    when it is another process than ``pid`` (Windows: the leader is pinned too, and
    without it no break is sent). ``job``: its Windows Job Object, by name (made by
    another process) or handle (ours). ``child``: our own child, waited on (and
    reaped) through its Popen. ``whole_group``: the stop is done when every process
    of the group is gone, not just ``pid`` (the leftovers of a dead run).
    Use it as a context manager: ``pin`` holds a pidfd or handles that ``__exit__``
    closes.
    """

    def __init__(self, pid: int, *, group: int | None = None,
                 group_created: float | None = None, job: str | int | None = None,
                 child: subprocess.Popen[bytes] | None = None,
                 whole_group: bool = False) -> None:
        self.pid = pid
        self.group = group
        self.group_created = group_created
        self.job = job
        self.child = child
        self.whole_group = whole_group
        self._proc: psutil.Process | None = None
        self._pidfd: int | None = None
        self._handle: int | None = None
        """Windows: the pinned process."""
        self._leader: int | None = None
        """Windows: the pinned leader of ``group`` when it is another process."""

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        for handle in (self._handle, self._leader):
            if handle is not None:
                winproc.api().close(handle)
        self._handle = self._leader = None

    def pin(self, create_time: float) -> Literal["ok", "gone", "mismatch"]:
        """Hold on to the process created at ``create_time``: from here on no signal can
        reach a process that takes over the pid (a pidfd on Linux, a handle on Windows,
        psutil elsewhere). ``mismatch``: another process has the pid, or it cannot be
        verified."""
        if sys.platform == "win32":
            return self._pin_windows(create_time)
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

    def _pin_windows(self, create_time: float) -> Literal["ok", "gone", "mismatch"]:
        held = _hold(self.pid, create_time)
        if not isinstance(held, int):
            return held
        self._handle = held
        if self.group is not None and self.group != self.pid:
            leader = (_hold(self.group, self.group_created)
                      if self.group_created is not None else "mismatch")
            if isinstance(leader, int):
                self._leader = leader
            else:
                # The leader is gone or its pid changed hands: the group id may now name
                # another process, so no break; the hard kill still reaches the target.
                log.warning("leader pid %s of pid %s's group is %s; no break will be sent",
                            self.group, self.pid,
                            "gone" if leader == "gone" else "not the one recorded")
                self.group = None
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

    def _group_pinned(self) -> bool:
        """Windows: whether the group id cannot change hands until we are done."""
        if self.group == self.pid:
            return self._handle is not None or self.child is not None
        return self._leader is not None

    def terminate(self) -> bool | None:
        """The graceful signal: True sent, False impossible, None already gone."""
        try:
            if sys.platform == "win32":
                if self.group is None:
                    return False  # no known group: a break could reach the whole console
                if not self._group_pinned():
                    log.warning("pid %s: its group leader %s is not pinned; no break sent",
                                self.pid, self.group)
                    return False
                if self.child is not None and self.child.poll() is not None:
                    return None
                if self._handle is not None and winproc.api().wait(self._handle, 0):
                    return None
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
            return
        if self._handle is None:
            log.error("pid %s is not pinned; not terminated by pid alone", self.pid)
            return
        api = winproc.api()
        # The leader (a launcher above the target) would exit with its child anyway;
        # ending it now keeps the supervisor from waiting on it.
        for handle in (self._handle, self._leader):
            if handle is not None:
                with contextlib.suppress(OSError):  # already exited: access denied
                    api.terminate(handle, winjob.KILLED_EXIT_CODE)

    def exit_code(self) -> int | None:
        """The target's exit status, where this process can read it."""
        if self.child is not None:
            return self.child.poll()
        if sys.platform == "win32" and self._handle is not None:
            with contextlib.suppress(OSError):
                return winproc.api().exit_code(self._handle)
        return None

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
        if sys.platform == "win32" and self._handle is not None:
            api = winproc.api()
            # In slices: a wait in a foreign call cannot be interrupted by Ctrl+C.
            while not api.wait(self._handle, min(WAIT_SLICE_S,
                                                 max(0.0, deadline - time.monotonic()))):
                if time.monotonic() >= deadline:
                    return False
            return True
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


def _hold(pid: int, create_time: float) -> int | Literal["gone", "mismatch"]:
    """Windows: a handle to ``pid`` if it is the process created at ``create_time``."""
    api = winproc.api()
    try:
        handle = api.open(pid)
    except OSError:
        return "mismatch"  # cannot verify (access denied): never signal
    if handle is None:
        return "gone"
    try:
        # Read through the handle: the process it holds, whatever the pid names now.
        if api.wait(handle, 0):
            verdict: Literal["gone", "mismatch"] | None = "gone"
        elif abs(api.created(handle) - create_time) > CREATE_TIME_TOLERANCE_S:
            verdict = "mismatch"
        else:
            verdict = None
    except OSError:
        verdict = "mismatch"
    if verdict is not None:
        api.close(handle)
        return verdict
    return handle


def unsalvaged(returncode: int | None, platform: str | None = None) -> str | None:
    """What an exit status says when the graceful signal's *default* action ended the
    process: no handler ran, so nothing was salvaged. None for any other status."""
    if returncode is None:
        return None
    if (platform or sys.platform) == "win32":
        if returncode & 0xFFFFFFFF == winproc.STATUS_CONTROL_C_EXIT:
            return ("exit status 0xC000013A (STATUS_CONTROL_C_EXIT): CTRL_BREAK_EVENT found "
                    "no SIGBREAK handler, so Windows ended the worker at once and nothing "
                    "was salvaged; the build must handle SIGBREAK (docs/integration.md)")
        return None
    if returncode == -signal.SIGTERM:
        return ("ended by SIGTERM's default action: no SIGTERM handler ran, so nothing was "
                "salvaged; the build must handle SIGTERM (docs/integration.md)")
    return None


def stop(target: Target, grace: float) -> Stopped:
    """The graceful signal, up to ``grace`` seconds to exit, then the hard kill and up to
    ``KILL_WAIT_S`` for the target to disappear (logged when it does not)."""
    sent = target.terminate()
    if sent is None:
        return Stopped("gone", False, target.exit_code())
    if sent and target.wait(grace):
        return Stopped("signalled", True, target.exit_code())
    target.kill()
    if not target.wait(KILL_WAIT_S):
        log.error("pid %s survived the hard kill for %gs", target.pid, KILL_WAIT_S)
    return Stopped("killed", sent, target.exit_code())
