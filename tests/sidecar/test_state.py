"""ladder.json round trips, agrees with sidecar/resume.py, and refuses what it did not write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from crawlguard.kernel.errors import CorruptStateError
from crawlguard.kernel.formats import ladderfile
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import WorkerIdentity
from crawlguard.sidecar import ladder
from crawlguard.sidecar.ladder import AlertFacts, Context, ShardLadder
from crawlguard.sidecar.resume import resume_env
from crawlguard.sidecar.state import LadderStore, from_file, to_file


def _busy_state() -> ShardLadder:
    w = WorkerIdentity(42, 1000.25)
    c = Context(now=1200.5, worker=w)
    s = ladder.on_alert(ShardLadder("slack__eng-oncall"),
                        AlertFacts("BFMShardCrawl", "firing", "abc", 1100.125), c)
    assert s.start is not None
    done = ladder.on_complete(s.state, s.start.id, "signalled", 1201.0).state
    w2 = WorkerIdentity(43, 1300.0)
    t = ladder.on_alert(done, AlertFacts("BFMShardStalled", "firing", "def", 1350.0),
                        Context(now=1400.0, worker=w2))
    return t.state


def test_round_trip_is_exact(state_dir: Path) -> None:
    state = _busy_state()
    assert state.pending is not None and state.env == {"BGEM3_DEVICE": "cpu"}
    on_disk = json.loads(json.dumps(ladderfile.dump(to_file(state))))
    assert from_file(state.shard, ladderfile.parse(on_disk)) == state
    store = LadderStore(StateDir(state_dir))
    with store.lock():
        store.save(state)
    assert store.load(state.shard) == state
    assert store.shards() == [state.shard]


def test_env_is_what_resume_env_reads(state_dir: Path) -> None:
    store = LadderStore(StateDir(state_dir))
    assert resume_env(state_dir, "slack__eng-oncall") == {}
    store.save(_busy_state())
    assert resume_env(state_dir, "slack__eng-oncall") == {"BGEM3_DEVICE": "cpu"}
    data = json.loads((state_dir / "shards/slack__eng-oncall/ladder.json").read_text())
    assert data["schema"] == 1 and data["rung"] == "cpu" and data["crawls"] == 2
    assert data["pending"]["worker"] == {"pid": 43, "create_time": 1300.0}


def test_missing_shard_is_a_fresh_ladder(state_dir: Path) -> None:
    assert LadderStore(StateDir(state_dir)).load("never") == ShardLadder("never")


@pytest.mark.parametrize("content", [
    "{not json", "[]", '{"env": {"A": 1}}', '{"rung": "gpu"}', '{"crawls": -1}',
    '{"schema": 99}', '{"pending": {"id": "r1", "rung": "nuke", "decided_at": 1}}',
    '{"history": [{"at": 1}]}',
])
def test_corrupt_files_are_refused_not_guessed(state_dir: Path, content: str) -> None:
    path = state_dir / "shards" / "s" / "ladder.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(CorruptStateError):
        LadderStore(StateDir(state_dir)).load("s")


def test_pause_switch_is_kept(state_dir: Path) -> None:
    store = LadderStore(StateDir(state_dir))
    assert store.paused().paused is False
    store.set_paused(True, 5.0, "maintenance")
    assert json.loads((state_dir / "sidecar.json").read_text()) == {
        "paused": True, "since": 5.0, "reason": "maintenance"}
    assert LadderStore(StateDir(state_dir)).paused().paused is True


def test_a_file_replaced_by_another_writer_is_read_again(state_dir: Path) -> None:
    mine, theirs = LadderStore(StateDir(state_dir)), LadderStore(StateDir(state_dir))
    mine.save(ShardLadder("s", crawls=1))
    assert mine.load("s").crawls == 1
    theirs.save(ShardLadder("s", crawls=7, rung="restart"))
    assert mine.load("s").crawls == 7


def test_a_save_is_fsynced_before_it_returns(state_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Durable before the answer: the file's data and the directory entry are flushed
    inside save, not later."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the file descriptors")
    monkeypatch.setattr(os, "fsync", fsync)
    LadderStore(StateDir(state_dir)).save(ShardLadder("s", crawls=1, seen=("k",)))
    shard_dir = str((state_dir / "shards" / "s").resolve())
    assert any(p.startswith(shard_dir + "/.ladder.json.") for p in synced), synced
    assert synced[-1] == shard_dir
