"""The state dir is checked at start, created private, and never silently recreated."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from crawlguard import CrawlTracker
from crawlguard.kernel.errors import StateError
from crawlguard.kernel.statedir import StateDir
from tests.helpers import REPO, crawlguard_cmd
from tests.sidecar.conftest import TOKEN, Live, alert, known, payload

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run(args: list[str], state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELIX_BFM_STATE_DIR": str(state), "HELIX_BFM_SIDECAR_TOKEN": TOKEN}
    return subprocess.run(crawlguard_cmd(*args), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


UNUSABLE = [pytest.param("under-a-file", id="under-a-file"),
            pytest.param("read-only", id="read-only", marks=pytest.mark.skipif(
                sys.platform == "win32" or (AS_ROOT and not sys.platform.startswith("linux")),
                reason="root writes anywhere"))]


def unusable(tmp_path: Path, kind: str) -> Path:
    if kind == "under-a-file":
        (tmp_path / "file").write_text("")
        return tmp_path / "file" / "state"
    if AS_ROOT:  # root writes into a mode-500 folder; nobody creates files in procfs
        return Path("/proc/self/fdinfo")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    return ro


@pytest.mark.parametrize("kind", UNUSABLE)
@pytest.mark.parametrize("command", [["sidecar", "--port", "0"],
                                     ["up", "--blind", "--alert-path", "embedded",
                                      "--shard", "a", "--",
                                      sys.executable, "-c", "pass"]])
def test_sidecar_and_up_refuse_a_state_dir_they_cannot_write(
        tmp_path: Path, kind: str, command: list[str]) -> None:
    done = run(command, unusable(tmp_path, kind))
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert ("not writable" if kind == "read-only" else "cannot create") in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err


def test_a_state_dir_crawlguard_creates_is_private(tmp_path: Path) -> None:
    StateDir(tmp_path / "a" / "state").ensure()
    CrawlTracker("s", state_dir=tmp_path / "b", device="cpu", env={})
    for path in (tmp_path / "a" / "state", tmp_path / "b"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def test_a_vanished_state_dir_is_not_recreated(
        sidecar_thread: Callable[..., Live], state_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    known(state_dir, "s", "t")
    live = sidecar_thread()
    live.post_alerts(payload(alert("s", time.time(), "a1")))
    live.settled("s")
    state_dir.rename(tmp_path / "moved")
    with caplog.at_level(logging.CRITICAL, "crawlguard.kernel.statedir"):
        r = live.client.post("/v1/alerts", json=payload(alert("t", time.time(), "b1")))
        assert r.status_code == 500 and "vanished" in r.json()["detail"]
        assert live.client.post("/v1/shards/s/rung", json={"rung": "cpu"}).status_code >= 500
    assert not state_dir.exists()
    assert any("refusing to recreate" in r.getMessage() for r in caplog.records)
    # The supervisor would read "no overrides" (GPU) from a vanished dir: it refuses too.
    from crawlguard.supervisor.launchenv import read_overrides

    with pytest.raises(StateError, match="vanished"):
        read_overrides(StateDir(state_dir), "s")
    # Put back, it serves again: the ladder of "s" was never forgotten.
    (tmp_path / "moved").rename(state_dir)
    assert live.shard("s")["rung"] == "restart"


def test_every_write_failure_is_logged(sidecar_thread: Callable[..., Live], state_dir: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    """A ladder that cannot be written: the alert is not acknowledged, and it is logged,
    once for Alertmanager's retries of it (until it can be recorded), once per request
    of a person."""
    known(state_dir, "s")
    live = sidecar_thread()
    (state_dir / "shards" / "s" / "ladder.json").mkdir()   # no file can replace a folder
    with caplog.at_level(logging.ERROR, "crawlguard.sidecar"):
        for _ in range(3):
            r = live.client.post("/v1/alerts", json=payload(alert("s", time.time(), "w1")))
            assert r.status_code == 500
        r = live.client.post("/v1/shards/s/rung", json={"rung": "cpu"})
        assert r.status_code == 500
    logged = [(rec.name, rec.getMessage()) for rec in caplog.records
              if rec.name.startswith("crawlguard.sidecar")]
    assert [name for name, _ in logged] == ["crawlguard.sidecar.judging",
                                            "crawlguard.sidecar.app"], logged
    assert all("ladder.json" in m for _, m in logged), logged
