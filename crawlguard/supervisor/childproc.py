"""Starting and stopping the supervisor's children (workers, and `up`'s servers).

Every child leads its own process group: on POSIX ``start_new_session=True``,
on Windows ``CREATE_NEW_PROCESS_GROUP``, which is what lets CTRL_BREAK_EVENT
reach a worker (it is delivered to a process group) and keeps a Ctrl-C in the
terminal from hitting the worker before the supervisor decides how to stop it.
A child is stopped the one way crawlguard stops a process
(``crawlguard.kernel.processes.stop``): SIGTERM to its group on POSIX,
CTRL_BREAK_EVENT on Windows, then SIGKILL to the group, or on Windows
TerminateJobObject on the child's Job Object (``winjob``), which also ends the
grandchildren that a launcher (venv ``python.exe``, ``uv run``, a ``.bat``)
started.

No orphans: a child must not outlive the supervisor, however the supervisor ends.
On Windows the job's kill-on-close does it. On Linux the child asks for a
parent-death signal (``PR_SET_PDEATHSIG``: SIGTERM for a worker, which can still
salvage; SIGKILL for a server) between fork and exec. Linux ties that signal to
the *thread* that forked, so children must be spawned from a thread that outlives
them (the main thread, or ``up``'s monitor, stopped only after the servers).
Grandchildren are not covered by it; the run record (``runrecord``) lets the next
``up`` stop what is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from crawlguard.kernel import processes, winjob, winproc
from crawlguard.kernel.errors import ProcessError
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.workers import WorkerIdentity

log = get_logger(__name__)

PR_SET_PDEATHSIG = 1
PARENT_DEATH_SIGNAL = signal.SIGTERM
"""What a Linux worker gets when its spawning thread dies: the graceful signal, so it
salvages its batch; what ignores it is left to the next ``up``'s sweep. Servers
(``spawn(..., salvage=False)``) get SIGKILL: they hold nothing to salvage (the
sidecar is crash-safe by design) and must be gone before the next ``up`` starts."""

_jobs: dict[int, tuple[int, str]] = {}
"""pid -> (job handle, job name) of the Windows children this process launched."""


def _parent_death_signal(sig: int) -> Callable[[], None] | None:
    """A preexec function that sets PR_SET_PDEATHSIG; None where Linux's prctl is absent.

    prctl is looked up here, before fork: the child runs only a foreign call and two
    syscalls, nothing that could wait on a lock another thread held at fork time."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return in_child


Created = Callable[["subprocess.Popen[bytes]"], None]
"""Called with a child that exists but, on Windows, has not run a line yet."""


def spawn(argv: Sequence[str], env: Mapping[str, str], *, cwd: Path | None = None,
          stdout: IO[Any] | int | None = None, stderr: IO[Any] | int | None = None,
          stdin: int | None = subprocess.DEVNULL,
          salvage: bool = True, created: Created | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` (never through a shell) as the leader of a new process group,
    in a Job Object of its own on Windows, with a parent-death signal on Linux.

    ``created`` runs before the child can do anything on Windows (it is still
    suspended, already in its job), so what it records (``launch.json``) is there
    before the worker can register; on POSIX it runs right after the start.
    Windows children run at NORMAL_PRIORITY_CLASS whatever this process runs at
    (a Scheduled Task's default is BELOW_NORMAL, which children would inherit)."""
    kwargs: dict[str, Any] = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = (subprocess.CREATE_NEW_PROCESS_GROUP
                                   | winjob.CREATE_SUSPENDED | winproc.NORMAL_PRIORITY_CLASS)
    else:
        kwargs["start_new_session"] = True
        kwargs["preexec_fn"] = _parent_death_signal(
            int(PARENT_DEATH_SIGNAL if salvage else signal.SIGKILL))
    try:
        popen = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=stdin,
                                 stdout=stdout, stderr=stderr, **kwargs)
    except OSError as exc:
        raise ProcessError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
    if sys.platform == "win32":
        _contain(popen, created)
    elif created is not None:
        created(popen)
    return popen


def _contain(popen: subprocess.Popen[bytes], created: Created | None) -> None:
    """Put a child created suspended into a new job named after it, let ``created``
    record it, then resume it.

    The child is resumed whatever happens to the job: a worker without a job still
    runs (and is still stopped by TerminateProcess), it only loses the tree kill
    (e.g. a parent job forbids nesting). A child that cannot be resumed is killed,
    and its job closed."""
    jobs = winjob.api()
    job: int | None = None
    try:
        name = winjob.job_name(WorkerIdentity.of_pid(popen.pid).key)
        try:
            job = jobs.create(name)
            jobs.assign(job, int(getattr(popen, "_handle")))  # noqa: B009
        except OSError as exc:
            log.warning("pid %s runs without a Job Object (%s): a hard kill will end only "
                        "that process, not its children", popen.pid, exc)
            if job is not None:
                jobs.close(job)
            job = None
        if job is not None:
            _jobs[popen.pid] = (job, name)  # job_of() answers inside ``created``
        if created is not None:
            created(popen)
        jobs.resume(popen.pid, processes.thread_ids(popen.pid))
    except (OSError, ProcessError) as exc:
        # Not resumed: it never ran a line, and must not stay suspended forever.
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            popen.kill()
            popen.wait(processes.KILL_WAIT_S)
        release(popen)  # the job's handle too (kill-on-close: nothing survives it)
        raise ProcessError(f"cannot start {popen.args!r}: {exc}") from exc


def job_of(popen: subprocess.Popen[bytes]) -> str | None:
    """The name of the child's Job Object (Windows), for the sidecar's hard kill."""
    held = _jobs.get(popen.pid)
    return None if held is None else held[1]


def release(popen: subprocess.Popen[bytes]) -> None:
    """Forget an exited child. Closing its job ends what it left running (kill-on-close)."""
    held = _jobs.pop(popen.pid, None)
    if held is not None:
        with contextlib.suppress(OSError):
            winjob.api().close(held[0])


def _target(popen: subprocess.Popen[bytes]) -> processes.Target:
    """The child leads its own group (``spawn``), and on Windows holds its own job."""
    held = _jobs.get(popen.pid)
    return processes.Target(popen.pid, group=popen.pid, child=popen,
                            job=None if held is None else held[0])


def stop_gracefully(popen: subprocess.Popen[bytes], grace: float) -> int:
    """Graceful signal, up to ``grace`` seconds for salvage, then the hard kill; the
    exit code (-9 when the child survived even that)."""
    try:
        if popen.poll() is None:
            processes.stop(_target(popen), grace)
        code = popen.poll()
        return -9 if code is None else code
    finally:
        if popen.poll() is not None:
            release(popen)


def describe_exit(returncode: int) -> str:
    """``exit code 1`` / ``signal SIGKILL`` (POSIX reports a signal death as -N) /
    ``exit code 0xC000013A`` (a Windows NTSTATUS, shown as Windows shows it)."""
    if returncode < 0 and sys.platform != "win32":
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    if returncode > 0xFFFF or returncode < 0:
        return f"exit code 0x{returncode & 0xFFFFFFFF:08X}"
    return f"exit code {returncode}"
