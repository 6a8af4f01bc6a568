"""What a drill refuses before it touches anything (exit 2): no running worker, a sidecar
it cannot reach, a worker whose crawl episode is already open."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from crawlguard.drill.run import (
    DrillConfig,
    check_episode,
    check_sidecar,
    run_drill,
    running_worker,
)
from crawlguard.kernel.discovery import rig_env
from crawlguard.kernel.errors import DrillRefused
from crawlguard.kernel.formats import ladderfile
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import WorkerIdentity, register_worker
from tests.helpers import free_port

ME = WorkerIdentity.current()


def test_no_registered_or_no_running_worker(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    with pytest.raises(DrillRefused, match="no running worker for shard s"):
        running_worker(state, "s")
    register_worker(state, "s", WorkerIdentity(ME.pid, ME.create_time - 7))  # gone
    with pytest.raises(DrillRefused, match="no running worker for shard s"):
        running_worker(state, "s")
    register_worker(state, "s", ME)
    assert running_worker(state, "s") == ME
    # Through the whole drill too, which then has written nothing.
    with pytest.raises(DrillRefused, match="no running worker for shard other"):
        run_drill(DrillConfig("other", env={"HELIX_BFM_STATE_DIR": str(tmp_path)}),
                  threading.Event(), lambda _: None)
    assert not (tmp_path / "drills").exists()


def test_a_sidecar_out_of_reach(tmp_path: Path) -> None:
    rig = rig_env({"HELIX_BFM_STATE_DIR": str(tmp_path),
                   "HELIX_BFM_SIDECAR_URL": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(DrillRefused, match="the ladder cannot act without the sidecar"):
        check_sidecar(rig, "s")


def test_an_episode_already_open_for_the_worker(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    register_worker(state, "s", ME)
    check_episode(state, "s", ME)  # no ladder yet: fine
    doc = ladderfile.LadderFile(shard="s", crawls=1, episode=ladderfile.Episode(
        worker=ME.key, opened_at=1.0, alertname="BFMShardCrawl", fingerprint="f",
        starts_at=1.0))
    ladderfile.write(state.ladder_file("s"), doc)
    with pytest.raises(DrillRefused, match="crawl episode open"):
        check_episode(state, "s", ME)
    other = doc.model_copy(update={"episode": doc.episode.model_copy(  # type: ignore[union-attr]
        update={"worker": "1-2000"})})
    ladderfile.write(state.ladder_file("s"), other)
    check_episode(state, "s", ME)   # another worker's episode: the drill's alert is new


def test_the_workers_own_knobs_are_read_from_its_metrics_file(tmp_path: Path) -> None:
    """The window and the shared-memory threshold a drill uses are the worker's, whatever
    the drill's own environment says."""
    from crawlguard import CrawlTracker
    from crawlguard.drill.run import worker_gauges
    from crawlguard.kernel.settings import Detection

    CrawlTracker("s", "backfill", "cuda:0", state_dir=tmp_path,
                 detection=Detection(window=3, shared_min_bytes=123 << 20))
    gauges = worker_gauges(StateDir(tmp_path), ME)
    assert gauges["bfm_crawl_window_batches"] == 3
    assert gauges["bfm_shared_min_bytes"] == 123 << 20
    assert worker_gauges(StateDir(tmp_path), WorkerIdentity(ME.pid, ME.create_time - 9)) == {}
