"""Starting and stopping the supervisor's children (workers, and `up`'s servers).

Every child leads its own process group: on POSIX ``start_new_session=True``,
on Windows ``CREATE_NEW_PROCESS_GROUP``, which is what lets CTRL_BREAK_EVENT
reach a worker (it is delivered to a process group) and keeps a Ctrl-C in the
terminal from hitting the worker before the supervisor decides how to stop it.
A graceful stop is SIGTERM to the group on POSIX, CTRL_BREAK_EVENT on Windows;
the hard kill is SIGKILL to the group / TerminateProcess.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from crawlguard.errors import ProcessError


def spawn(argv: Sequence[str], env: Mapping[str, str], *, cwd: Path | None = None,
          stdout: IO[Any] | int | None = None, stderr: IO[Any] | int | None = None,
          stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """Start ``argv`` (never through a shell) as the leader of a new process group."""
    kwargs: dict[str, Any] = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    else:
        kwargs["start_new_session"] = True
    try:
        return subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=stdin, stdout=stdout,
                                stderr=stderr, **kwargs)
    except OSError as exc:
        raise ProcessError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc


def request_stop(popen: subprocess.Popen[bytes]) -> None:
    """The graceful signal: the worker salvages what is complete and exits."""
    if popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        if sys.platform == "win32":
            popen.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        else:
            try:
                os.killpg(popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                # The child left its group (setsid of its own): signal it alone.
                popen.send_signal(signal.SIGTERM)


def hard_kill(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        if sys.platform == "win32":
            popen.kill()
        else:
            try:
                os.killpg(popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                popen.kill()


def stop_gracefully(popen: subprocess.Popen[bytes], grace: float, poll: float = 0.05) -> int:
    """Graceful signal, up to ``grace`` seconds for salvage, then the hard kill."""
    request_stop(popen)
    deadline = time.monotonic() + grace
    while popen.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=poll)
    if popen.poll() is None:
        hard_kill(popen)
    return popen.wait()


def describe_exit(returncode: int) -> str:
    """``exit code 1`` / ``signal SIGKILL`` (POSIX reports a signal death as -N)."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"
