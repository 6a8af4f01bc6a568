"""The long-running children of `crawlguard up`: sidecar, Prometheus, Alertmanager.

Each is started on a port chosen up front, so that when one dies (crashed,
OOM-killed, killed by a person) ``ensure()`` can bring it back on the same
address: Alertmanager's webhook URL, Prometheus' targets and the embedded
evaluator keep pointing at it, and the state that matters (the ladder) is in
the state dir, not in the process. Output goes to a log file in the run
directory; readiness is an HTTP GET that answers 200.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from crawlguard.kernel import http
from crawlguard.kernel.errors import HttpError, ProcessError
from crawlguard.kernel.listen import set_listen_options
from crawlguard.kernel.logs import Outage, get_logger
from crawlguard.kernel.statedir import check_present
from crawlguard.supervisor import childproc
from crawlguard.supervisor.runrecord import RunRecord

log = get_logger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """Whether a server of ours could listen on ``host:port`` now (with the options the
    servers bind with, so a port left in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        set_listen_options(s)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def http_ok(url: str, timeout: float = 1.0, tls: ssl.SSLContext | None = None) -> bool:
    try:
        return http.get(url, timeout=timeout, tls=tls).status == 200
    except HttpError:
        return False


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def steadily(step: Callable[[], None], stop: threading.Event, period: float,
             what: str) -> None:
    """Run ``step`` every ``period`` seconds until ``stop``. An exception in one step is
    logged (once, with its traceback, until a step succeeds again) and the loop goes on:
    a monitor that died would leave the run unwatched for good."""
    outage = Outage(log, what, logging.ERROR)
    while not stop.wait(period):
        try:
            step()
        except Exception as exc:  # whatever it is, the next step runs
            if not outage.failing:
                log.error("%s: step failed", what, exc_info=exc)
            outage.failed("fails (%s: %s); it goes on, every %gs", type(exc).__name__,
                          exc, period)
        else:
            outage.recovered()


class ServerProc:
    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], ready_url: str,
                 log_path: Path, start_timeout: float = 60.0,
                 record: RunRecord | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.ready_url = ready_url
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.record = record
        self.tls = tls
        """Client TLS for ``ready_url`` (an https:// server that may demand a certificate)."""
        self.popen: subprocess.Popen[bytes] | None = None
        self.closed = False

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    def start(self) -> None:
        check_present(self.log_path)  # a state dir that vanished is never made afresh
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.popen = childproc.spawn(self.argv, self.env, stdout=out,
                                         stderr=subprocess.STDOUT, salvage=False)
        if self.record is not None:
            self.record.add(self.name, self.popen.pid)
        deadline = time.monotonic() + self.start_timeout
        while not http_ok(self.ready_url, tls=self.tls):
            if self.popen.poll() is not None:
                raise ProcessError(f"{self.name} exited with "
                                   f"{childproc.describe_exit(self.popen.returncode)} at start; "
                                   f"its log {self.log_path} ends:\n{log_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop(5.0)
                raise ProcessError(f"{self.name} did not answer {self.ready_url} within "
                                   f"{self.start_timeout:g}s; log: {self.log_path}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def ensure(self) -> str | None:
        """Restart the server if it died; returns what happened, for the log."""
        if self.popen is None or self.closed or self.alive():
            return None
        how = childproc.describe_exit(self.popen.returncode)
        self._forget(self.popen)
        try:
            self.start()
        except ProcessError as exc:
            return f"{self.name} ended with {how}; restart failed: {exc}"
        return f"{self.name} ended with {how}; restarted (pid {self.pid})"

    def stop(self, grace: float = 10.0) -> None:
        self.closed = True  # no restart from here on, even by a monitor mid-check
        if self.popen is not None:
            with contextlib.suppress(OSError):
                childproc.stop_gracefully(self.popen, grace)
            self._forget(self.popen)

    def _forget(self, popen: subprocess.Popen[bytes]) -> None:
        childproc.release(popen)
        if self.record is not None:
            self.record.discard(popen.pid)
