"""Carrying out a restart: verify the worker, signal it, wait, kill. All OS bits live here.

Sequence for one worker (``restart_worker``):

1. identity: the registered pid must still be the process that registered
   (pid AND creation time, ``WorkerIdentity.status``). A gone worker is
   ``already_gone``; a reused pid is ``identity_mismatch`` and is never signalled.
2. graceful signal, so the build's salvage can flush the batch it holds. The
   group to signal is the one the supervisor launched: ``shards/<shard>/launch.json``
   names the process it started (``LaunchRecord``), which may be the worker's
   parent (a venv's ``Scripts/python.exe`` launcher, ``uv run``, a ``.bat``)
   rather than the worker that registered. The launch is used only when it is
   still the same process (pid AND creation time) and is the worker itself or one
   of its ancestors (``LaunchRecord.leads``).
   - POSIX: SIGTERM to the process group led by the verified launch, when the
     worker is in it; else to the worker's own group when it leads one
     (``os.getpgid(pid) == pid``, e.g. started with ``start_new_session=True``;
     its DataLoader children then stop too); else to the pid alone. A group is
     never signalled when the sidecar itself belongs to it, so neither the
     sidecar nor a user's shell is hit. On Linux the worker is pinned with a
     pidfd first, so the signal cannot reach a process that took over the pid
     after the identity check.
   - Windows: ``os.kill(launch_pid, CTRL_BREAK_EVENT)``, which Windows delivers
     to the process *group* whose id is that pid: the group the supervisor
     created with ``CREATE_NEW_PROCESS_GROUP``, provided it shares the sidecar's
     console. Without a verified launch there is no known group, and a pid that
     is not a group id makes ``GenerateConsoleCtrlEvent`` act like group 0, i.e.
     every process on the console, ``up`` included (Windows Terminal issue #335).
     So then no break is sent: the graceful step is impossible and the worker is
     terminated at once (outcome ``killed``).
3. wait up to ``grace_seconds`` for it to exit (pidfd poll on Linux, psutil
   wait elsewhere; a zombie counts as exited because its parent, not the
   sidecar, reaps it), then hard kill: SIGKILL (to the group signalled), or on
   Windows ``TerminateJobObject`` on the launch's Job Object (the whole tree; see
   ``crawlguard.kernel.winjob``) and ``TerminateProcess`` of the worker and the launch
   when there is no job.

Outcomes: ``signalled`` (exited within the grace period), ``killed`` (needed
the hard kill), ``already_gone``, ``identity_mismatch``; and, recorded by
``crawlguard.sidecar.rungs`` without coming here, ``no_worker`` and ``error``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from crawlguard.kernel import winjob
from crawlguard.kernel.errors import ProcessError
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.workers import LaunchRecord, WorkerIdentity

log = get_logger(__name__)

OUTCOMES = ("signalled", "killed", "already_gone", "identity_mismatch", "no_worker", "refused",
            "error")
KILL_WAIT_SECONDS = 10.0
"""How long to wait for a SIGKILLed worker to disappear before reporting it anyway."""


@dataclass(frozen=True)
class ActionResult:
    outcome: str
    effective_at: float
    detail: str = ""

    def __post_init__(self) -> None:
        # The outcome becomes a metric label: an undocumented one is a bug here.
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown rung outcome {self.outcome!r}")


def restart_worker(worker: WorkerIdentity, grace_seconds: float,
                   clock: Callable[[], float] = time.time,
                   launch: LaunchRecord | None = None) -> ActionResult:
    """Stop ``worker`` so its supervisor resumes it; never touches any other process."""
    ident = WorkerIdentity(worker.pid, worker.create_time)
    try:
        status = ident.status()
    except ProcessError as exc:
        # We cannot tell who the pid is: not signalling is the only safe answer.
        return ActionResult("identity_mismatch", clock(), f"cannot verify pid: {exc}")
    if status == "gone":
        return ActionResult("already_gone", clock(), f"pid {worker.pid} had already exited")
    if status == "reused":
        return ActionResult("identity_mismatch", clock(),
                            f"pid {worker.pid} now belongs to another process; not signalled")
    with _Target(worker, launch) as target:
        if target.mismatch:
            return ActionResult("identity_mismatch", clock(),
                                f"pid {worker.pid} changed hands or cannot be verified")
        if target.proc is None:
            return ActionResult("already_gone", clock(), f"pid {worker.pid} exited before signal")
        sent = target.terminate()
        if sent is None:
            return ActionResult("already_gone", clock(), "exited before the signal")
        if sent and target.wait(grace_seconds):
            return ActionResult("signalled", clock(), f"exited within {grace_seconds:g}s")
        target.kill()
        if not target.wait(KILL_WAIT_SECONDS):
            log.error("pid %s survived the hard kill for %gs", worker.pid, KILL_WAIT_SECONDS)
        return ActionResult("killed", clock(), "hard kill after the grace period"
                            if sent else "graceful signal impossible; hard kill")


class _Target:
    """One verified worker process, pinned by a pidfd where the OS has them."""

    def __init__(self, worker: WorkerIdentity, launch: LaunchRecord | None = None) -> None:
        self.worker = worker
        self.launch = launch
        self.proc: psutil.Process | None = None
        self.pidfd: int | None = None
        self.mismatch = False

    def __enter__(self) -> _Target:
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            with contextlib.suppress(OSError):
                self.pidfd = pidfd_open(self.worker.pid)
        try:
            # Re-checked after the pidfd exists: from here on the pid cannot change hands.
            self.proc = psutil.Process(self.worker.pid)
            self.mismatch = not self.worker.created_at(self.proc.create_time())
        except psutil.NoSuchProcess:
            self.proc = None
        except psutil.Error:
            self.mismatch = True  # cannot verify (e.g. access denied): never signal
        if self.launch is not None and not self._verified(self.launch):
            log.warning("launch record pid %s does not lead worker pid %s; not used",
                        self.launch.pid, self.worker.pid)
            self.launch = None
        return self

    def _verified(self, launch: LaunchRecord) -> bool:
        try:
            return launch.identity.is_alive() and launch.leads(self.worker)
        except ProcessError:
            return False

    def __exit__(self, *exc: object) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)

    def _own_group(self) -> int | None:
        """The group to signal (POSIX): the launch's or the worker's own, never ours."""
        if sys.platform == "win32":
            return None
        try:
            pgid = os.getpgid(self.worker.pid)
        except ProcessLookupError:
            return None
        leader = self.launch.pid if self.launch is not None else self.worker.pid
        return pgid if pgid == leader and pgid != os.getpgrp() else None

    def terminate(self) -> bool | None:
        """Send the graceful signal: True sent, False impossible, None already gone."""
        assert self.proc is not None
        try:
            if sys.platform == "win32":
                if self.launch is None:
                    return False  # no known group: a break could reach the whole console
                os.kill(self.launch.pid, signal.CTRL_BREAK_EVENT)
                return True
            group = self._own_group()
            if group is not None:
                os.killpg(group, signal.SIGTERM)
            elif self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGTERM)
            else:
                self.proc.send_signal(signal.SIGTERM)
            return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            return None
        except (OSError, psutil.Error) as exc:
            log.warning("graceful signal to pid %s failed: %s", self.worker.pid, exc)
            return False

    def kill(self) -> None:
        assert self.proc is not None
        try:
            if sys.platform == "win32":
                self._kill_windows()
                return
            group = self._own_group()
            if group is not None:
                os.killpg(group, signal.SIGKILL)
            elif self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            else:
                self.proc.kill()
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
        except (OSError, psutil.Error) as exc:
            log.error("hard kill of pid %s failed: %s", self.worker.pid, exc)

    def _kill_windows(self) -> None:
        launch = self.launch
        if launch is not None and launch.job and winjob.api().terminate_named(launch.job):
            return
        assert self.proc is not None
        self.proc.kill()  # TerminateProcess: this process only
        if launch is not None and launch.pid != self.worker.pid:
            # The launcher would exit with the worker anyway; ending it now keeps the
            # supervisor from waiting on it. Verified above, so it is still ours.
            with contextlib.suppress(psutil.Error):
                psutil.Process(launch.pid).kill()

    def wait(self, timeout: float) -> bool:
        """True once the worker has exited (a zombie counts), False after ``timeout``."""
        if self.pidfd is not None:
            # A pidfd turns readable when the process terminates: exact, no polling.
            # (pidfds exist on Linux only: mypy --platform win32 knows no select.poll.)
            poller = select.poll()  # type: ignore[attr-defined,unused-ignore]
            poller.register(self.pidfd, select.POLLIN)  # type: ignore[attr-defined,unused-ignore]
            return bool(poller.poll(max(0.0, timeout) * 1000))
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.proc.wait(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
                return True
            except psutil.TimeoutExpired:
                # Only the parent can reap a zombie; for us it is gone.
                with contextlib.suppress(psutil.Error):
                    if self.proc.status() == psutil.STATUS_ZOMBIE:
                        return True
                if time.monotonic() >= deadline:
                    return False
            except psutil.NoSuchProcess:
                return True
