"""Shared test helpers: free ports, deadline waits, real processes.

No sleeps as synchronisation: everything waits on a condition with a deadline
and fails with a message that says what never happened.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")
TOP_PACKAGES = ("crawlguard", "crawlguard.exporter", "crawlguard.sidecar", "crawlguard.rules")
"""Walked one by one: in a checkout the mapped folders are not under crawlguard/."""


def crawlguard_modules() -> list[str]:
    """Every module of crawlguard (packages are imported to find their modules; the
    modules are not), ``__main__`` modules left out."""
    names: list[str] = []
    for top in TOP_PACKAGES:
        package = importlib.import_module(top)
        names.append(top)
        names += [info.name for info in pkgutil.walk_packages(package.__path__, top + ".")
                  if not info.name.endswith("__main__")]
    return sorted(set(names))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], T | None], timeout: float = 20.0,
               interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def require_binary(name: str) -> str:
    """Path of ``name``; skip the test when missing, unless CI demands the binaries."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CRAWLGUARD_REQUIRE_BINARIES") == "1":
        pytest.fail(f"{name} is required (CRAWLGUARD_REQUIRE_BINARIES=1) but not on PATH")
    pytest.skip(f"{name} not installed (apt-get install prometheus prometheus-alertmanager)")


def crawlguard_cmd(*args: str) -> list[str]:
    """The ``crawlguard`` command run with this interpreter (no PATH lookup)."""
    return [sys.executable, "-m", "crawlguard", *args]


class Proc:
    """A real child process whose output is collected by a reader thread."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: str | Path | None = None, inherit_env: bool = True) -> None:
        full_env = dict(os.environ) if inherit_env else {}
        if env:
            full_env.update(env)
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True
        self.popen = subprocess.Popen(
            list(argv), env=full_env, cwd=cwd, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, **kwargs)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(self.popen.stdout,),
                                        daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_for_line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            for line in list(self.lines):
                m = regex.search(line)
                if m:
                    return m
            if self.popen.poll() is not None:
                raise AssertionError(f"process exited {self.popen.returncode} before "
                                     f"printing /{pattern}/:\n{self.output}")
            return None

        try:
            return wait_until(found, timeout, what=f"output /{pattern}/")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- output ---\n{self.output}") from None

    def wait(self, timeout: float = 30.0) -> int:
        rc = self.popen.wait(timeout)
        self._reader.join(5)
        return rc

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        self._reader.join(5)


def clean_env(**knobs: str) -> dict[str, str]:
    """An environment with nothing of the test's but what any program needs to start (what a
    person's fresh terminal has), plus ``knobs``."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT", "TEMP", "TMP", "USERPROFILE")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, **knobs}


def start_exporter(state_dir: Path, vram_file: Path | None = None,
                   extra_env: Mapping[str, str] | None = None) -> tuple[Proc, str]:
    """A real ``crawlguard exporter`` on a free loopback port; returns (proc, base URL)."""
    env = {"HELIX_BFM_STATE_DIR": str(state_dir)}
    if vram_file is not None:
        env["HELIX_BFM_VRAM_SOURCE"] = f"file:{vram_file}"
    env.update(extra_env or {})
    proc = Proc(crawlguard_cmd("exporter", "--host", "127.0.0.1", "--port", "0"), env=env,
                cwd=REPO)
    m = proc.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)/metrics")
    return proc, m.group(1)
