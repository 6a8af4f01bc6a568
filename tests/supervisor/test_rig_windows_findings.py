"""`up`'s parts that the Windows findings changed, run for real here.

- the live view writes through ``ConsoleWriter``: a console that blocks writes
  (a QuickEdit selection) or fails them (a hung-up terminal) stops nobody;
- a configured token file is used in place, never copied into the state dir,
  and a generated token's file is created owner-only.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from crawlguard.kernel.settings import Settings
from crawlguard.kernel.statedir import StateDir
from crawlguard.rig import secretfile
from crawlguard.rig.console import ConsoleWriter
from crawlguard.rig.liveview import LiveView
from crawlguard.rig.up import RigConfig, RunningRig
from crawlguard.supervisor.loop import ShardRun, SupervisorEvent
from tests.helpers import wait_until


class FrozenConsole(io.StringIO):
    """A console with text selected in QuickEdit mode: write blocks until released."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()

    def write(self, text: str) -> int:
        self.released.wait(30)
        return super().write(text)


class HungUpConsole(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(5, "Input/output error")


def test_a_frozen_console_does_not_stop_the_supervisors_thread(tmp_path: Path) -> None:
    console = FrozenConsole()
    writer = ConsoleWriter(console)
    view = LiveView(StateDir(tmp_path), {"a": ShardRun("a")}, writer,  # type: ignore[arg-type]
                    mode="lines", period=3600)
    started = time.monotonic()
    for n in range(50):   # what the supervisor's thread does on every launch/exit
        view.event(SupervisorEvent("a", "launch", f"launch #{n}"))
    assert time.monotonic() - started < 5   # it did not wait for the console
    assert console.getvalue() == ""
    console.released.set()                  # the person presses a key
    writer.close()
    assert "crawlguard up: [a] launch #49" in console.getvalue()


def test_a_hung_up_console_is_dropped_without_an_error(tmp_path: Path) -> None:
    writer = ConsoleWriter(HungUpConsole())
    view = LiveView(StateDir(tmp_path), {"a": ShardRun("a")}, writer,  # type: ignore[arg-type]
                    mode="lines")
    view.say("first")
    wait_until(lambda: writer._broken, what="the writer to notice the console is gone")
    view.say("second")   # no exception, nothing queued
    writer.close()


def rig(tmp_path: Path, env: dict[str, str]) -> RunningRig:
    settings = Settings.from_env({**env, "HELIX_BFM_STATE_DIR": str(tmp_path / "state")})
    return RunningRig(RigConfig(shards=("a",), command=("x",), settings=settings, env=env),
               io.StringIO())


def test_a_configured_token_file_is_used_in_place(tmp_path: Path) -> None:
    token_file = tmp_path / "sidecar.token"
    token_file.write_text("s3cret-token-of-the-rig\n")
    r = rig(tmp_path, {"HELIX_BFM_SIDECAR_TOKEN_FILE": str(token_file)})
    r._prepare()
    assert r.token == "s3cret-token-of-the-rig" and r.token_file == token_file.resolve()
    assert not (r.run_dir / "sidecar.token").exists()    # no copy with the dir's ACL


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_a_generated_token_file_is_owner_only_from_its_creation(tmp_path: Path) -> None:
    r = rig(tmp_path, {})
    r._prepare()
    assert r.token_file == r.run_dir / "sidecar.token"
    assert r.token_file.read_text() == r.token + "\n"
    assert stat.S_IMODE(os.stat(r.token_file).st_mode) == 0o600
    secretfile.write_private(r.token_file, "new\n")       # a rerun replaces it
    assert r.token_file.read_text() == "new\n"
