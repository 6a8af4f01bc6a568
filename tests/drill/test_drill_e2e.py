"""`crawlguard drill` end to end, on a build that is not the reference rebuild
(tests/e2e/drillbuild.py: real work, real timing, nothing drill-aware): on the real
Prometheus path with `up`, and with `crawlguard run` plus separate parts. The embedded
path, and the refusal when no worker runs, are in tests/e2e/test_operate_up.py.

Whatever way a drill ends (the ladder acts, the timeout, Ctrl+C, the drill killed), the
worker runs at full speed afterwards and no drill is left that could mark anything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from crawlguard.kernel.drills import live_drill
from crawlguard.kernel.statedir import StateDir
from crawlguard.rules import EmbeddedAlerting
from tests.helpers import (
    REPO,
    Proc,
    clean_env,
    crawlguard_cmd,
    require_binary,
    start_exporter,
    wait_until,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP, SIGINT")]

BUILD = REPO / "tests" / "e2e" / "drillbuild.py"
TOKEN = "drill-e2e-token-" + "x" * 27


def worker_pid(state: Path, shard: str = "s") -> int:
    return int(json.loads((state / "shards" / shard / "worker.json").read_text())["pid"])


def history(state: Path, shard: str = "s") -> list[dict[str, object]]:
    path = state / "shards" / shard / "ladder.json"
    return json.loads(path.read_text())["history"] if path.exists() else []


def not_stopped(pid: int) -> bool:
    return psutil.Process(pid).status() != psutil.STATUS_STOPPED


def drill(env: dict[str, str], *args: str, timeout: float = 120
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(crawlguard_cmd("drill", "s", *args), env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def test_drill_on_the_prometheus_path_and_with_keep(tmp_path: Path) -> None:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    state = tmp_path / "state"
    # --blind: this machine has no GPU and the rig no VRAM source; the drill brings
    # its own spill evidence, so the chain is proved on a rig that watches nothing else.
    up = Proc(crawlguard_cmd("up", "--blind", "--state-dir", str(state), "--alert-path",
                             "prometheus", "--interval", "1", "--progress", "lines",
                             "--shard", "s", "--",
                             sys.executable, str(BUILD), "--shard", "{shard}"),
              env=clean_env(), cwd=tmp_path, inherit_env=False)
    env = clean_env(HELIX_BFM_STATE_DIR=str(state))
    try:
        up.wait_for_line(r"\[s\] launch #1", 90)
        done = drill(env, "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["alert_path"] == "prometheus" and result["acted"] is True
        assert result["rung"] == "restart" and result["detected_after_batches"] >= 8
        ladder = json.loads((state / "shards" / "s" / "ladder.json").read_text())
        assert (ladder["crawls"], ladder["rung"]) == (0, "none")
        # --keep: the same rehearsal, counted as the shard's first crawl.
        kept = drill(env, "--keep")
        assert kept.returncode == 0, kept.stderr
        assert "the ladder acted" in kept.stdout and "--keep: counted" in kept.stdout
        ladder = json.loads((state / "shards" / "s" / "ladder.json").read_text())
        assert (ladder["crawls"], ladder["rung"]) == (1, "restart")
        assert not_stopped(worker_pid(state))
    finally:
        up.popen.send_signal(signal.SIGINT)
        up.wait(60)
        up.stop()


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Path, str, str, dict[str, str]]]:
    """`crawlguard exporter`, `crawlguard sidecar` and `crawlguard run`, each on its own,
    as a rig without `up` runs them; no alert evaluation yet."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    vram = tmp_path / "vram.json"
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 1, "total_bytes": 8 << 30}]}))
    exporter, exporter_url = start_exporter(state, vram)
    knobs = {"HELIX_BFM_STATE_DIR": str(state), "HELIX_BFM_SIDECAR_TOKEN_FILE": str(token)}
    sidecar = Proc(crawlguard_cmd("sidecar", "--port", "0"), env=clean_env(**knobs), cwd=REPO,
                   inherit_env=False)
    sidecar_url = sidecar.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
    run = Proc(crawlguard_cmd("run", "--shard", "s", "--", sys.executable, str(BUILD),
                              "--shard", "{shard}"),
               env=clean_env(HELIX_BFM_STATE_DIR=str(state)), cwd=REPO, inherit_env=False)
    try:
        wait_until(lambda: worker_pid(state), 60, what="the worker's registration")
        yield state, exporter_url, sidecar_url, {**clean_env(**knobs),
                                                 "HELIX_BFM_SIDECAR_URL": sidecar_url}
    finally:
        for proc in (run, sidecar, exporter):
            proc.stop(30)


def test_drill_with_run_and_separate_parts_and_every_way_it_ends(
        parts: tuple[Path, str, str, dict[str, str]]) -> None:
    state, exporter_url, sidecar_url, env = parts
    worker = worker_pid(state)
    # No alert evaluation runs yet: the drill reaches its timeout, and lets go.
    timed_out = drill(env, "--json", "--timeout", "6")
    assert timed_out.returncode == 1, timed_out.stderr
    result = json.loads(timed_out.stdout)
    # The worker's tracker may have seen the crawl (a batch count), but nothing alerted.
    assert result.pop("detected_after_batches") in (None, *range(1, 1000))
    assert result == {"shard": "s", "acted": False, "rung": "none", "onset_to_alert_s": None,
                      "onset_to_signal_s": None, "alert_path": "external"}
    assert not_stopped(worker) and worker_pid(state) == worker
    assert not (state / "drills" / "s.json").exists()

    # Ctrl+C: exit 130, the worker running.
    ctrl_c = Proc(crawlguard_cmd("drill", "s"), env=env, cwd=REPO, inherit_env=False)
    ctrl_c.wait_for_line(r"slowed", 60)
    os.kill(ctrl_c.pid, signal.SIGINT)
    assert ctrl_c.wait(30) == 130, ctrl_c.output
    assert not_stopped(worker)

    # The drill killed outright: its slowdown ends by itself; its file marks nothing.
    killed = Proc(crawlguard_cmd("drill", "s"), env=env, cwd=REPO, inherit_env=False)
    killed.wait_for_line(r"slowed", 60)
    cycle = psutil.Process(killed.pid).children()
    assert len(cycle) == 1
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(30)
    _, alive = psutil.wait_procs(cycle, timeout=10)
    assert not alive, "the duty cycle outlived the drill"
    assert not_stopped(worker)
    assert (state / "drills" / "s.json").exists()
    assert live_drill(StateDir(state), "s", now=time.time()) is None

    # Now with alerts (the embedded rules, run here as a rig's own evaluator would be).
    stop = threading.Event()
    alerting = EmbeddedAlerting(exporter_url, sidecar_url, TOKEN, interval_s=0.5,
                                retry_initial_s=0.5, retry_max_s=2.0)
    thread = threading.Thread(target=alerting.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        done = drill(env, "--json")
    finally:
        stop.set()
        thread.join(10)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["acted"] is True and result["alert_path"] == "external"
    assert worker_pid(state) != worker and not psutil.pid_exists(worker)
    ladder = json.loads((state / "shards" / "s" / "ladder.json").read_text())
    assert (ladder["crawls"], ladder["rung"], ladder["env"]) == (0, "none", {})
