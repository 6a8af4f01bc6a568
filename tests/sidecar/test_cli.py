"""`crawlguard env`, `rung`, `status`, `pause` and the sidecar's refusals at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from crawlguard.cli.env import render
from crawlguard.cli.main import main
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import register_worker
from crawlguard.sidecar.ladder import ShardLadder
from crawlguard.sidecar.state import LadderStore
from tests.helpers import REPO, Proc, clean_env, crawlguard_cmd, free_port
from tests.sidecar.conftest import GONE, TOKEN, Live, laddered


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> Callable[[Live], None]:
    monkeypatch.setenv("HELIX_BFM_STATE_DIR", str(state_dir))

    def point_at(live: Live) -> None:
        monkeypatch.setenv("HELIX_BFM_SIDECAR_URL", live.url)
        monkeypatch.setenv("HELIX_BFM_SIDECAR_TOKEN", TOKEN)

    return point_at


def test_env_formats_quote_correctly() -> None:
    env = {"BGEM3_DEVICE": "cpu", "ODD": "it's $HOME; rm -rf /"}
    assert render(env, "env") == "BGEM3_DEVICE=cpu\nODD=it's $HOME; rm -rf /"
    sh = render(env, "sh")
    assert sh.splitlines()[0] == "export BGEM3_DEVICE=cpu"
    out = subprocess.run(["sh", "-c", f"{sh}\nprintf %s \"$ODD\""], capture_output=True,
                         text=True, check=True).stdout
    assert out == env["ODD"]
    assert render(env, "powershell").splitlines() == [
        "$env:BGEM3_DEVICE = 'cpu'", "$env:ODD = 'it''s $HOME; rm -rf /'"]
    assert json.loads(render(env, "json")) == env
    assert render({}, "env") == ""


def test_env_reads_the_state_dir_without_a_sidecar(
        cli_env: Callable[[Live], None], state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    LadderStore(StateDir(state_dir)).save(ShardLadder("s1", rung="cpu",
                                                      env={"BGEM3_DEVICE": "cpu"}))
    assert main(["env", "s1"]) == 0
    assert capsys.readouterr().out == "BGEM3_DEVICE=cpu\n"
    assert main(["env", "s1", "--format", "powershell"]) == 0
    assert capsys.readouterr().out == "$env:BGEM3_DEVICE = 'cpu'\n"
    assert main(["env", "never-crawled"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "'never-crawled' is unknown" in captured.err
    register_worker(StateDir(state_dir), "registered", GONE)
    assert main(["env", "registered"]) == 0 and capsys.readouterr().out == ""
    assert main(["env", "../x"]) == 2
    assert "not a safe name" in capsys.readouterr().err
    (state_dir / "shards" / "s1" / "ladder.json").write_text("{")
    assert main(["env", "s1"]) == 2
    assert "cannot read the resume environment" in capsys.readouterr().err


def test_rung_status_pause_through_the_api(
        cli_env: Callable[[Live], None], sidecar_thread: Callable[..., Live],
        capsys: pytest.CaptureFixture[str], state_dir: Path) -> None:
    laddered(state_dir, "confluence")
    live = sidecar_thread()
    cli_env(live)
    assert main(["rung", "confluence", "next", "--reason", "drill"]) == 0
    assert "restart decided as r1" in capsys.readouterr().out
    live.settled("confluence")
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "action=ladder paused=no" in out and "confluence" in out and "restart" in out
    assert main(["status", "typo"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "404" in captured.err and "'typo' is unknown" in captured.err
    assert main(["status", "confluence", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["history"][-1]["reason"] == "drill"
    assert main(["pause", "--reason", "x"]) == 0
    assert main(["rung", "confluence", "cpu"]) == 2
    assert "409" in capsys.readouterr().err
    assert main(["resume"]) == 0
    assert main(["rung", "confluence", "reset"]) == 0
    assert live.shard("confluence")["rung"] == "none"
    broken = state_dir / "shards" / "broken" / "ladder.json"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\0" * 8)
    assert main(["status"]) == 0
    captured = capsys.readouterr()
    assert "confluence" in captured.out and "UNREADABLE" in captured.out
    assert "broken:" in captured.err and "reset" in captured.err
    assert main(["rung", "broken", "reset"]) == 0
    assert "UNREADABLE" not in (main(["status"]), capsys.readouterr().out)[1]


def test_clients_fail_in_one_line(cli_env: Callable[[Live], None],
                                  sidecar_thread: Callable[..., Live],
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HELIX_BFM_SIDECAR_URL", f"http://127.0.0.1:{free_port()}")
    assert main(["status"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("crawlguard status: error: cannot reach the sidecar at http://")
    assert "\n" not in err
    live = sidecar_thread()
    monkeypatch.setenv("HELIX_BFM_SIDECAR_URL", live.url)
    monkeypatch.setenv("HELIX_BFM_SIDECAR_TOKEN", "wrong-but-long-enough")
    assert main(["rung", "a", "restart"]) == 2
    assert "401" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--host", "0.0.0.0"], {}, "non-loopback"),
    (["--host", "0.0.0.0", "--insecure-no-token"], {}, "non-loopback"),
    (["--host", "127.0.0.1"], {}, "--insecure-no-token"),
    (["--host", "127.0.0.1"], {"HELIX_BFM_CRAWL_ACTION": "restart-all"}, "CRAWL_ACTION"),
    (["--port", "99999"], {"HELIX_BFM_SIDECAR_TOKEN": "t" * 16}, "--port='99999'"),
    (["--port", "-1"], {"HELIX_BFM_SIDECAR_TOKEN": "t" * 16}, "between 0 and 65535"),
    ([], {"HELIX_BFM_SIDECAR_TOKEN": "short"}, "at least 16"),
    ([], {"HELIX_BFM_SIDECAR_TOKEN": "t" * 16, "HELIX_BFM_DEVICE_VAR": "LD_PRELOAD"},
     "HELIX_BFM_DEVICE_VAR"),
])
def test_sidecar_refuses_to_start_unsafely(args: list[str], env: dict[str, str], message: str,
                                           state_dir: Path) -> None:
    full = {"HELIX_BFM_STATE_DIR": str(state_dir), **env}
    done = subprocess.run(crawlguard_cmd("sidecar", "--port", "0", *args), cwd=REPO,
                          env={**os.environ, **full}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_exporter_port_is_range_checked(state_dir: Path) -> None:
    done = subprocess.run(crawlguard_cmd("exporter", "--port", "99999"), cwd=REPO,
                          env={**os.environ, "HELIX_BFM_STATE_DIR": str(state_dir)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--port='99999'" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["env", "s1"], ["status"]])
def test_env_and_status_check_the_detection_knobs(
        cli_env: Callable[[Live], None], command: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HELIX_BFM_CRAWL_WINDOW", "eight")
    assert main(command) == 2
    assert "HELIX_BFM_CRAWL_WINDOW" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["run", "--shard", "a", "--"],
    ["up", "--blind", "--alert-path", "embedded", "--progress", "off", "--shard", "a", "--"],
    ["sidecar", "--port", "0"],
    ["exporter", "--port", "0"],
], ids=["run", "up", "sidecar", "exporter"])
def test_commands_that_start_something_warn_of_a_misspelled_knob(
        command: list[str], tmp_path: Path) -> None:
    """A misspelled knob is otherwise ignored: HELIX_BFM_CRAWL_FACTR leaves the factor at 5."""
    argv = [*command, sys.executable, "-c", "pass"] if command[-1] == "--" else command
    env = {**clean_env(HELIX_BFM_STATE_DIR=str(tmp_path / "state"),
                       HELIX_BFM_SIDECAR_TOKEN=TOKEN), "HELIX_BFM_CRAWL_FACTR": "3"}
    proc = Proc(crawlguard_cmd(*argv), env=env, cwd=tmp_path, inherit_env=False)
    try:
        proc.wait_for_line(rf"crawlguard {command[0]}: warning: HELIX_BFM_CRAWL_FACTR is not a "
                           r"knob crawlguard reads \(ignored\): did you mean "
                           r"HELIX_BFM_CRAWL_FACTOR\?", 60)
    finally:
        proc.stop()
