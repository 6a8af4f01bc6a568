"""A hung-up or SIGKILLed `crawlguard up` leaves nothing running, and the next `up`
finishes the rebuild lossless.

SIGHUP (a closed terminal or SSH session) is a stop like SIGTERM: exit 130 after
the graceful stop of every child. SIGKILL gives `up` no say at all: its children
get the parent-death signal. Either way nothing of the first run is left within
10 s, and a second `up` on the same state dir (whose sidecar lock the first
one's sidecar would otherwise still hold) starts and completes the shard.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from crawlguard.refbuild.corpus import ShardSpec, generate
from crawlguard.refbuild.store import output_dir
from crawlguard.refbuild.verify import verify_shard
from tests.e2e.test_up import up_cmd
from tests.helpers import REPO, Proc, wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="SIGHUP/SIGKILL and the Linux parent-death signal")]


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL], ids=["SIGHUP", "SIGKILL"])
def test_up_ended_by_a_hangup_or_kill_leaves_nothing_and_the_next_up_runs(
        sig: signal.Signals, tmp_path: Path) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    generate(data, ShardSpec("big", files=20, genes_per_file=16))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIX_BFM_")}
    log_file = tmp_path / "up.log"
    first = Proc([*up_cmd(state, data, "1")[:4], "--log-file", str(log_file),
                  *up_cmd(state, data, "1")[4:]], env=env, cwd=REPO)
    try:
        wait_until(lambda: len(list(output_dir(data, "big").glob("*.json"))) >= 2, timeout=60,
                   what="two finished files")
        children = psutil.Process(first.pid).children(recursive=True)
        assert len(children) >= 2                                  # sidecar + worker
        os.kill(first.pid, sig)
        rc = first.wait(60)
        assert rc == (130 if sig == signal.SIGHUP else -signal.SIGKILL), first.output[-3000:]
    finally:
        first.stop()
    _, alive = psutil.wait_procs(children, timeout=10)
    left = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [(p.pid, p.cmdline()) for p in left]
    assert "launch #1" in log_file.read_text()                   # --log-file, no pipe
    second = Proc(up_cmd(state, data, "50"), env=env, cwd=REPO)
    try:
        assert second.wait(120) == 0, second.output[-3000:]
    finally:
        second.stop()
    assert verify_shard(data, "big").lossless
