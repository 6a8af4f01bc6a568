"""Issue 18 items 2-4: `up` outlives a failing monitor step, and a state dir that vanishes
mid-run is noticed within a second, said, and stops the run with exit 4; no process of
the run (up, its sidecar, a worker) makes it afresh."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
from pathlib import Path

import pytest

from crawlguard.rig.servers import steadily
from crawlguard.rig.up import EXIT_STATE_GONE
from tests.helpers import REPO, Proc, clean_env, crawlguard_cmd, wait_until

BUILD = REPO / "tests" / "e2e" / "drillbuild.py"


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
    state = tmp_path / "state"
    vram = tmp_path / "vram.json"
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 2 << 30,
                                          "total_bytes": 16 << 30}]}))
    up = Proc(crawlguard_cmd("up", "--alert-path", "embedded", "--interval", "0.5",
                             "--progress", "lines", "--state-dir", str(state), "--shard", "s",
                             "--", sys.executable, str(BUILD), "--shard", "{shard}"),
              env=clean_env(HELIX_BFM_VRAM_SOURCE=f"file:{vram}",
                            HELIX_BFM_SIDECAR_PORT="0"), inherit_env=False)
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
    assert not state.exists(), sorted(str(p) for p in state.rglob("*"))
