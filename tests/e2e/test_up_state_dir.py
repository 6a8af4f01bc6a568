"""Issue 18 items 2-4: `up` outlives a failing monitor step, and a state dir that vanishes
mid-run is noticed within a second, said, and stops the run (`up` and `run`) with exit 4;
no process of the run (up, its sidecar, a worker) makes it afresh."""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psutil
import pytest

from crawlguard.kernel.formats.upfile import UpFile, read_up
from crawlguard.rig.servers import http_ok, steadily
from crawlguard.rig.up import EXIT_STATE_GONE
from tests.helpers import REPO, Proc, clean_env, crawlguard_cmd, require_binary, wait_until

BUILD = REPO / "tests" / "e2e" / "drillbuild.py"
FAKE_WORKER = REPO / "tests" / "supervisor" / "fake_worker.py"
REBUILD_UNIT = REPO / "deploy" / "systemd" / "crawlguard-rebuild.service"


def start_up(tmp_path: Path, alert_path: str) -> tuple[Path, dict[str, str], Proc]:
    """A real `up` on a newcomer's build (one shard, ``s``), its VRAM never full."""
    state = tmp_path / "state"
    vram = tmp_path / "vram.json"
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 2 << 30,
                                          "total_bytes": 16 << 30}]}))
    env = clean_env(HELIX_BFM_VRAM_SOURCE=f"file:{vram}", HELIX_BFM_SIDECAR_PORT="0")
    up = Proc(crawlguard_cmd("up", "--alert-path", alert_path, "--interval", "0.5",
                             "--progress", "lines", "--state-dir", str(state), "--shard", "s",
                             "--", sys.executable, str(BUILD), "--shard", "{shard}"),
              env=env, inherit_env=False)
    return state, env, up


def test_a_failing_step_is_logged_once_and_the_loop_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    stop, steps = threading.Event(), []

    def step() -> None:
        steps.append(len(steps))
        if len(steps) <= 3:
            raise OSError(28, "No space left on device")  # what a full disk raised
        if len(steps) >= 6:
            stop.set()

    caplog.set_level(logging.INFO, logger="crawlguard")
    thread = threading.Thread(target=steadily, args=(step, stop, 0.01, "the monitor"))
    thread.start()
    thread.join(20)
    assert not thread.is_alive() and len(steps) >= 6
    failed = [r for r in caplog.records if "No space left" in r.getMessage()
              or (r.exc_info and "No space left" in str(r.exc_info[1]))]
    assert len(failed) == 2  # the traceback once, the outage once; not one per step
    assert any(r.getMessage() == "the monitor recovered" for r in caplog.records)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="rm -rf of an open state dir")
def test_a_vanished_state_dir_stops_up_with_exit_4_and_is_never_made_afresh(
        tmp_path: Path) -> None:
    state, _, up = start_up(tmp_path, "embedded")
    try:
        up.wait_for_line(r"\[s\] launch #1", 60)
        wait_until(lambda: (state / "shards" / "s" / "batches.jsonl").exists(),
                   what="the worker's first batch")
        shutil.rmtree(state)
        rc = up.wait(60)
    finally:
        up.stop()
    assert rc == EXIT_STATE_GONE, up.output
    assert "vanished or was replaced" in up.output and "Traceback" not in up.output
    # Said once, whether up's monitor or the supervisor's worker poll saw it first.
    assert up.output.count("stopping this run (exit 4)") == 1, up.output
    assert not state.exists(), sorted(str(p) for p in state.rglob("*"))


@pytest.mark.skipif(sys.platform == "win32", reason="rm -rf of an open state dir")
def test_a_vanished_state_dir_stops_run_with_exit_4_and_the_worker_gracefully(
        tmp_path: Path) -> None:
    """`run` has no monitor thread: its worker poll notices, stops the worker with the
    graceful signal and exits 4, which the systemd unit does not restart."""
    state, record, vram = tmp_path / "state", tmp_path / "record.jsonl", tmp_path / "vram.json"
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 0, "total_bytes": 1}]}))
    run = Proc(crawlguard_cmd("run", "--shard", "a", "--", sys.executable, str(FAKE_WORKER),
                              "wait-term", "{shard}", str(record)),
               env=clean_env(HELIX_BFM_STATE_DIR=str(state),
                             HELIX_BFM_VRAM_SOURCE=f"file:{vram}"),
               inherit_env=False)
    try:
        wait_until(lambda: (tmp_path / "a.ready").exists(), 60, what="the worker ready")
        shutil.rmtree(state)
        rc = run.wait(60)
    finally:
        run.stop()
    assert rc == 4, run.output
    assert "vanished or was replaced" in run.output and "(exit 4)" in run.output
    assert "Traceback" not in run.output, run.output
    assert (tmp_path / "a.terminated").read_text() == str(int(signal.SIGTERM))
    assert not state.exists(), sorted(str(p) for p in state.rglob("*"))
    unit = REBUILD_UNIT.read_text(encoding="utf-8")
    assert "Restart=on-failure" in unit and "RestartPreventExitStatus=4" in unit


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_prometheus_or_alertmanager_is_back_within_seconds(tmp_path: Path) -> None:
    """Issue 18 item 10: `up` owns its Prometheus and Alertmanager and brings each back
    on the same address; Prometheus re-sends firing alerts every interval, so a fresh
    Alertmanager hears of a crawl within one (``promstack.RESEND_DELAY_S``)."""
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    state, _, up = start_up(tmp_path, "prometheus")
    try:
        up.wait_for_line(r"\[s\] launch #1", 90)
        for name in ("prometheus", "alertmanager"):
            before = read_up(state)
            assert before is not None
            old = before.servers[name]
            os.kill(old, signal.SIGKILL)
            after = wait_until(functools.partial(_restarted, state, name, old), 60,
                               what=f"{name} restarted")
            wait_until(functools.partial(http_ok, f"{after.urls[name]}/-/ready"), 30,
                       what=f"{name} ready")
            assert f"{name} ended with signal" in up.output or "restarted" in up.output
        now = read_up(state)
        assert now is not None
        argv = psutil.Process(now.servers["prometheus"]).cmdline()
        assert "--rules.alert.resend-delay=500ms" in argv
    finally:
        up.stop()


def _restarted(state: Path, name: str, old: int) -> UpFile | None:
    up = read_up(state)
    return up if up is not None and up.servers.get(name) not in (None, old) else None


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="a file written over in place")
def test_garbage_over_a_live_gauge_file_is_counted_and_the_crawl_still_takes_a_rung(
        tmp_path: Path) -> None:
    """Issue 18 item 1: dd if=/dev/urandom over a worker's live gauge file about a second
    after its start hid its crawl with no signal. Now the exporter quarantines and counts
    it, the worker writes a new one, and a crawl (a drill) still climbs the ladder."""
    state, env, up = start_up(tmp_path, "embedded")
    try:
        up.wait_for_line(r"\[s\] launch #1", 60)
        gauge = wait_until(lambda: next(iter((state / "metrics").glob("gauge_*.db")), None),
                           what="the worker's gauge file")
        with open(gauge, "r+b") as fh:
            fh.write(random.Random(18).randbytes(65536))
        wait_until(lambda: (state / "metrics" / "quarantine" / gauge.name).exists() and
                   gauge.exists(), 30, what="quarantined and written anew")
        found = read_up(state)
        assert found is not None
        metrics = httpx.get(f"{found.urls['exporter']}/metrics", timeout=10).text
        assert "bfm_exporter_corrupt_files_total 1.0" in metrics
        drill = subprocess.run(crawlguard_cmd("drill", "s", "--json", "--timeout", "300"),
                               env={**env, "HELIX_BFM_STATE_DIR": str(state)},
                               capture_output=True, text=True, timeout=360)
        assert drill.returncode == 0, drill.stderr
        assert json.loads(drill.stdout)["acted"] is True
    finally:
        up.stop()
