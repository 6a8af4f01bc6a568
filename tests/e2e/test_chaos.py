"""Chaos: workers SIGKILLed at random moments, the sidecar SIGKILLed once, and
the rebuild still finishes lossless.

`crawlguard up` runs two shards of the reference rebuild (one healthy, one
that collapses like incident 2) on the simulated GPU with the embedded alert
path. A seeded sequence of random delays picks the moments: a kill may land
while Python starts, while the model loads, in a batch, or in the middle of
an output file's atomic write. Halfway through, the sidecar is killed too;
`up` must bring it back on the same port and the ladder must carry on.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
from pathlib import Path

import psutil
import pytest

from exporter.refbuild.corpus import ShardSpec, generate
from exporter.refbuild.verify import verify_shard
from tests.helpers import REPO, Proc, crawlguard_cmd, wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")]

SEED = 20260611
KILLS = 20
SHARDS = (ShardSpec("alpha", files=40, genes_per_file=16, profile="healthy"),
          ShardSpec("beta", files=40, genes_per_file=16, profile="incident2"))


def live_worker(up: psutil.Process, killed: set[tuple[int, float]]) -> psutil.Process | None:
    for child in up.children():
        try:
            cmd = child.cmdline()
            key = (child.pid, child.create_time())
            if "exporter.refbuild" in cmd and "work" in cmd and key not in killed \
                    and child.status() != psutil.STATUS_ZOMBIE:
                return child
        except psutil.Error:
            continue
    return None


def sidecar_pid(state: Path) -> int | None:
    try:
        pid = json.loads((state / "run" / "up.json").read_text())["servers"]["sidecar"]
        return int(pid)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def kill_sidecar(state: Path) -> None:
    old = wait_until(lambda: sidecar_pid(state), what="sidecar pid in up.json")
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: sidecar_pid(state) not in (None, old), timeout=30,
               what="up to restart the sidecar")


def test_random_sigkills_and_a_dead_sidecar_lose_nothing(tmp_path: Path) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    for spec in SHARDS:
        generate(data, spec)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIX_BFM_")}
    # Kills during Python start-up are relaunches without progress by design
    # here; the futile-restart limit has its own tests.
    env["HELIX_BFM_MAX_FUTILE_RESTARTS"] = "1000"
    up = Proc(crawlguard_cmd(
        "up", "--state-dir", str(state), "--alert-path", "embedded", "--interval", "0.5",
        "--simulate-gpu", "--progress", "lines", *[a for s in SHARDS for a in ("--shard", s.shard)],
        "--", sys.executable, "-m", "exporter.refbuild", "work", "--data", str(data),
        "--shard", "{shard}"), env=env, cwd=REPO)
    try:
        up_ps = psutil.Process(up.pid)
        rng = random.Random(SEED)
        killed: set[tuple[int, float]] = set()
        sidecar_killed = False
        while len(killed) < KILLS:
            worker = wait_until(lambda: live_worker(up_ps, killed), timeout=60,
                                what=f"worker #{len(killed) + 1} (rebuild done too early?)")
            # The random moment of the kill: chaos, not synchronisation.
            threading.Event().wait(rng.uniform(0.0, 0.7))
            try:
                if worker.status() == psutil.STATUS_ZOMBIE:
                    continue
                worker.send_signal(signal.SIGKILL)   # psutil refuses a reused pid
            except psutil.NoSuchProcess:
                continue                             # it finished first: no kill
            killed.add((worker.pid, worker.create_time()))
            if len(killed) == KILLS // 2 and not sidecar_killed:
                kill_sidecar(state)
                sidecar_killed = True
        assert up.wait(180) == 0, up.output[-4000:]
    finally:
        up.stop()
    assert "sidecar ended with signal SIGKILL; restarted" in up.output
    assert up.output.count("ended with signal SIGKILL after") >= KILLS
    for spec in SHARDS:
        verdict = verify_shard(data, spec.shard)
        assert verdict.lossless, verdict
        assert verdict.present == spec.files * spec.genes_per_file
