"""Warnings that would repeat are logged once until what failed recovers (issue 18, item 9).

The verifier looks at every ladder each second, and Alertmanager re-sends a shard's
alerts every few minutes (and retries a 500 sooner): an unreadable ladder, an
unusable registration or a ladder that cannot be written wrote a line each time,
about 166 B/s per unreadable ladder. Real files, the sidecar's real parts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from crawlguard.kernel.settings import Detection
from crawlguard.kernel.statedir import StateDir
from crawlguard.sidecar.ladder import ShardLadder
from crawlguard.sidecar.state import LadderStore
from crawlguard.sidecar.verify import Verifier
from tests.sidecar.conftest import Live, alert, known, laddered, payload


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [f"{r.levelname} {r.getMessage()}" for r in caplog.records if text in r.getMessage()]


def test_an_unreadable_ladder_is_logged_once_by_the_verifier(
        state_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = LadderStore(StateDir(state_dir))
    for shard in ("broken", "other"):
        (state_dir / "shards" / shard).mkdir(parents=True)
        (state_dir / "shards" / shard / "ladder.json").write_text("{not json")
    verifier = Verifier(store, Detection(), None)
    with caplog.at_level(logging.INFO, "crawlguard.sidecar"):
        for _ in range(5):
            assert verifier.step() == []
        assert len(_lines(caplog, "shard broken:")) == 1
        assert len(_lines(caplog, "shard other:")) == 1  # each shard its own line
        store.save(ShardLadder("broken"))
        verifier.step()
        verifier.step()
        (state_dir / "shards" / "broken" / "ladder.json").write_text("[]")
        verifier.step()
        verifier.step()
    assert [line.split(":")[0] for line in _lines(caplog, "shard broken:")] == [
        "WARNING shard broken", "INFO shard broken", "WARNING shard broken"]
    assert "recovered" in _lines(caplog, "shard broken:")[1]
    assert len(_lines(caplog, "shard other:")) == 1


def test_an_unusable_registration_is_logged_once_across_notifications(
        sidecar_thread: Callable[..., Live], state_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    laddered(state_dir, "s")
    worker = state_dir / "shards" / "s" / "worker.json"
    worker.write_text("{half")
    live = sidecar_thread()
    with caplog.at_level(logging.INFO, "crawlguard.sidecar"):
        for i in range(4):  # new alerts of the shard, as Alertmanager sends them
            got = live.post_alerts(payload(alert("s", time.time(), f"f{i}")))
            assert got["decisions"][0]["decision"] == "no_worker"
        worker.unlink()
        known(state_dir, "s")
        got = live.post_alerts(payload(alert("s", time.time(), "f9")))
        assert got["decisions"][0]["decision"] == "rung"
    logged = _lines(caplog, "worker registration")
    assert [line.split(" ")[0] for line in logged] == ["ERROR", "INFO"], logged
    assert "recovered" in logged[1]
