"""Carrying out a restart: verify the worker, signal it, wait, kill.

Which process and which group the rung reaches is decided here; the signals, the
waits and the hard kill are the one way crawlguard stops a process
(``crawlguard.kernel.processes``, where psutil and the OS calls live).

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
     terminated at once (outcome ``killed``). The worker and the launch are held
     by process handles from their identity check to the end (``Target.pin``):
     neither pid can change hands while the break is sent. A worker whose exit
     status is STATUS_CONTROL_C_EXIT had no SIGBREAK handler: the rung's detail
     says that nothing was salvaged.
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

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from crawlguard.kernel import processes
from crawlguard.kernel.errors import ProcessError
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.workers import (
    LaunchRecord,
    WorkerIdentity,
    leading_launch,
    posix_group,
)

log = get_logger(__name__)

OUTCOMES = ("signalled", "killed", "already_gone", "identity_mismatch", "no_worker", "refused",
            "error")


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
    try:
        status = worker.status()
    except ProcessError as exc:
        # We cannot tell who the pid is: not signalling is the only safe answer.
        return ActionResult("identity_mismatch", clock(), f"cannot verify pid: {exc}")
    if status == "gone":
        return ActionResult("already_gone", clock(), f"pid {worker.pid} had already exited")
    if status == "reused":
        return ActionResult("identity_mismatch", clock(),
                            f"pid {worker.pid} now belongs to another process; not signalled")
    leading = leading_launch(launch, worker)
    if launch is not None and leading is None:
        log.warning("launch record pid %s does not lead worker pid %s; not used",
                    launch.pid, worker.pid)
    launch = leading
    with _target(worker, launch) as target:
        pinned = target.pin(worker.create_time)
        if pinned == "mismatch":
            return ActionResult("identity_mismatch", clock(),
                                f"pid {worker.pid} changed hands or cannot be verified")
        if pinned == "gone":
            return ActionResult("already_gone", clock(), f"pid {worker.pid} exited before signal")
        stopped = processes.stop(target, grace_seconds)
    if stopped.outcome == "gone":
        return ActionResult("already_gone", clock(), "exited before the signal")
    if stopped.outcome == "signalled":
        # Windows: the exit status, read through the pinned handle, tells whether the
        # build's handler ran at all (a build without one is ended at once, unsalvaged).
        lost = processes.unsalvaged(stopped.exit_code)
        return ActionResult("signalled", clock(), f"exited within {grace_seconds:g}s"
                            + (f"; {lost}" if lost else ""))
    return ActionResult("killed", clock(), "hard kill after the grace period"
                        if stopped.graceful else "graceful signal impossible; hard kill")


def _target(worker: WorkerIdentity, launch: LaunchRecord | None) -> processes.Target:
    """What the rung reaches: the launch's group (or the worker's own), never ours."""
    if sys.platform == "win32":
        # CTRL_BREAK_EVENT only to the group the supervisor created (the launch's), whose
        # leader ``pin`` holds with the worker until the break, the wait and the kill.
        if launch is None:
            return processes.Target(worker.pid)
        return processes.Target(worker.pid, group=launch.pid, group_created=launch.create_time,
                                job=launch.job)
    return processes.Target(worker.pid, group=posix_group(worker, launch))
