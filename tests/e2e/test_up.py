"""`crawlguard up` stops cleanly on Ctrl-C, says the one command that resumes, and that
command resumes the rebuild."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

import psutil
import pytest

from crawlguard.refbuild.corpus import ShardSpec, generate
from crawlguard.refbuild.store import output_dir
from crawlguard.refbuild.verify import verify_shard
from tests.helpers import REPO, Proc, crawlguard_cmd, wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a process")]


def up_cmd(state: Path, data: Path, time_scale: str, progress: str = "lines") -> list[str]:
    return crawlguard_cmd("up", "--state-dir", str(state), "--alert-path", "embedded",
                          "--interval", "0.5", "--simulate-gpu", "--progress", progress,
                          "--shard", "big", "--", sys.executable, "-m", "crawlguard.refbuild",
                          "work", "--data", str(data), "--shard", "{shard}", "--time-scale",
                          time_scale)


def test_ctrl_c_stops_everything_and_a_later_up_resumes(tmp_path: Path) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    generate(data, ShardSpec("big", files=30, genes_per_file=16))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIX_BFM_")}
    # Slow: ~1 s per file; --progress off still says how to reach the run.
    first = Proc(up_cmd(state, data, "1", progress="off"), env=env, cwd=REPO)
    try:
        wait_until(lambda: len(list(output_dir(data, "big").glob("*.json"))) >= 2, timeout=60,
                   what="two finished files")
        children = psutil.Process(first.pid).children(recursive=True)
        assert len(children) >= 2                                  # sidecar + worker
        assert f"token file {state / 'run' / 'sidecar.token'}" in first.output
        assert "crawlguard up: sidecar http://127.0.0.1:" in first.output
        os.kill(first.pid, signal.SIGINT)
        assert first.wait(60) == 130, first.output[-3000:]
    finally:
        first.stop()
    # The last line is the command that resumes: the same, with the state dir spelled out.
    last = first.lines[-1]
    assert "To resume: crawlguard up --state-dir" in last, first.output[-3000:]
    resume = shlex.split(last.split("To resume: ", 1)[1])
    assert resume[:2] == ["crawlguard", "up"] and resume[1:] == up_cmd(state, data, "1", "off")[3:]
    assert "big" in resume and "--" in resume
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {alive}"
    worker_log = (state / "run" / "logs" / "big.log").read_text()
    assert "stopped by signal 15" in worker_log      # the graceful stop reached the worker
    kept = len(list(output_dir(data, "big").glob("*.json")))
    assert 2 <= kept < 30
    faster = resume[1:]
    faster[faster.index("--time-scale") + 1] = "50"
    second = Proc(crawlguard_cmd(*faster), env=env, cwd=tmp_path)   # from anywhere
    try:
        assert second.wait(120) == 0, second.output[-3000:]
    finally:
        second.stop()
    assert verify_shard(data, "big").lossless
    worker_log = (state / "run" / "logs" / "big.log").read_text()
    assert f"({16 * (30 - kept)} genes written by this worker)" in worker_log
