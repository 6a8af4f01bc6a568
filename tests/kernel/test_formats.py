"""crawlguard.kernel.formats: one reader and one writer per state file, versioned.

Each format is written with its writer and read back with its reader; files of
the first release (no version field) still read; later versions, damaged
lines and damaged files are refused or skipped, never guessed at.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crawlguard.kernel.errors import CorruptStateError, StateError
from crawlguard.kernel.formats import batchlog, jsonlines, ladderfile, vramlog
from crawlguard.kernel.statedir import StateDir

# -- ladder.json ----------------------------------------------------------------


def test_ladder_round_trip_stamps_the_version(tmp_path: Path) -> None:
    path = StateDir(tmp_path).ladder_file("s")
    doc = ladderfile.parse({"crawls": 2, "rung": "cpu", "env": {"BGEM3_DEVICE": "cpu"},
                            "history": [{"kind": "rung", "rung": "cpu", "at": 5.0}]})
    ladderfile.write(path, doc)
    on_disk = json.loads(path.read_text())
    assert on_disk["schema"] == ladderfile.VERSION
    assert on_disk["history"] == [{"kind": "rung", "rung": "cpu", "at": 5.0}]  # no nulls
    back = ladderfile.read(path)
    assert back == doc
    assert (back.version, back.crawls, back.rung, back.env) == (1, 2, "cpu",
                                                                {"BGEM3_DEVICE": "cpu"})


def test_a_ladder_without_a_version_is_version_1(tmp_path: Path) -> None:
    path = tmp_path / "ladder.json"
    path.write_text('{"crawls": 1, "env": {"BGEM3_DEVICE": "cpu"}}')
    doc = ladderfile.read(path)
    assert doc is not None and doc.version == 1 and doc.rung == "none" and doc.history == []
    assert ladderfile.read(tmp_path / "missing.json") is None


@pytest.mark.parametrize("content", [
    "{not json", "[]", "\xff", '{"schema": 2}', '{"schema": "1"}', '{"schema": 0}',
    '{"env": {"A": 1}}', '{"env": {"A-B": "x"}}', '{"env": []}', '{"crawls": -1}',
    '{"crawls": true}', '{"rung": 3}', '{"history": {}}', '{"history": [{"at": 1}]}',
    '{"history": [{"kind": "rung"}]}', '{"history": [{"kind": "rung", "at": "noon"}]}',
])
def test_a_damaged_ladder_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "ladder.json"
    path.write_text(content, encoding="latin-1")
    with pytest.raises(CorruptStateError, match=str(path).replace("\\", "\\\\")):
        ladderfile.read(path)


def test_resume_env_reads_what_the_sidecars_writer_wrote(tmp_path: Path) -> None:
    """sidecar/resume.py against the real writer: LadderStore.save, then resume_env."""
    from crawlguard.sidecar.ladder import ShardLadder
    from crawlguard.sidecar.resume import resume_env
    from crawlguard.sidecar.state import LadderStore

    store = LadderStore(StateDir(tmp_path))
    env = {"BGEM3_DEVICE": "cpu", "OTHER_VAR": "a b 'c' \"d\" é"}
    for shard_env in ({}, env):
        store.save(ShardLadder("slack__eng-oncall", crawls=2, rung="cpu", env=shard_env))
        assert resume_env(tmp_path, "slack__eng-oncall") == shard_env
        assert store.load("slack__eng-oncall").env == shard_env


def test_resume_env_refuses_instead_of_guessing(tmp_path: Path) -> None:
    from crawlguard.kernel.errors import ResumeEnvError, UnsafeNameError
    from crawlguard.sidecar.resume import resume_env

    assert resume_env(tmp_path, "never") == {}
    path = StateDir(tmp_path).ladder_file("s")
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": 1, "env": {"BGEM3_DEVICE": 1}}')
    with pytest.raises(ResumeEnvError, match="cannot read the resume environment") as err:
        resume_env(tmp_path, "s")
    assert isinstance(err.value, StateError) and isinstance(err.value.__cause__,
                                                            CorruptStateError)
    with pytest.raises(UnsafeNameError):
        resume_env(tmp_path, "../s")


def test_resume_imports_nothing_heavier_than_the_schemas() -> None:
    """The standard library and pydantic (the ladder file's one schema): no server,
    HTTP client, metrics, psutil or YAML in a build's own supervisor loop."""
    code = ("import sys, crawlguard.sidecar.resume; "
            "print(sorted(m for m in ('filelock', 'psutil', 'prometheus_client', 'fastapi', "
            "'starlette', 'uvicorn', 'yaml', 'httpx', 'pynvml', 'crawlguard.exporter') "
            "if m in sys.modules), 'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[] True"


# -- batches.jsonl ----------------------------------------------------------------

def _writer(path: Path, **kw: object) -> batchlog.BatchWriter:
    args: dict[str, object] = {"stage": "backfill", "device": "cuda:0", "gpu": "0",
                               "pid": 42, "factor": 5.0}
    args.update(kw)
    return batchlog.BatchWriter(path, **args)  # type: ignore[arg-type]


def test_batch_lines_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "shards" / "s" / "batches.jsonl"
    w = _writer(path)
    w.append(t=10.0, genes=64.0, seconds=4.0, rate=16.0, ema=None, baseline=None, streak=0)
    w.append(t=14.0, genes=64.0, seconds=4.0, rate=16.0, ema=15.5, baseline=16.0, streak=2)
    w.close()
    raw = path.read_bytes()
    assert b"\r" not in raw and raw.count(b"\n") == 2
    assert all(json.loads(line)["v"] == batchlog.VERSION for line in raw.splitlines())
    batches, bad = batchlog.read(path)
    assert bad == 0 and [b.t for b in batches] == [10.0, 14.0]
    last = batches[-1]
    assert (last.stage, last.device, last.gpu, last.pid, last.factor) == (
        "backfill", "cuda:0", "0", 42, 5.0)
    assert (last.ema, last.baseline, last.streak, last.threshold) == (15.5, 16.0, 2, 3.2)


def test_the_writer_refuses_what_would_not_be_json() -> None:
    from crawlguard.kernel.errors import UnsafeNameError

    with pytest.raises(UnsafeNameError):
        _writer(Path("x"), stage='a"b')
    with pytest.raises(UnsafeNameError):
        _writer(Path("x"), device="cuda\\0")
    with pytest.raises(ValueError):
        _writer(Path("x"), gpu='0","x":"')


def test_a_writer_that_cannot_open_loses_lines_not_the_batch(tmp_path: Path) -> None:
    blocker = tmp_path / "shard"
    blocker.write_text("")
    w = _writer(blocker / "batches.jsonl")  # its parent is a file
    for t in (1.0, 2.0):  # no exception reaches the batch, and each line tries again
        w.append(t=t, genes=1.0, seconds=1.0, rate=1.0, ema=None, baseline=None, streak=0)
    w.close()
    assert blocker.read_text() == "" and not (blocker / "batches.jsonl").exists()
    blocker.unlink()
    blocker.mkdir()  # the directory can be made now: the next line is written
    w.append(t=3.0, genes=1.0, seconds=1.0, rate=1.0, ema=None, baseline=None, streak=0)
    w.close()
    assert [b.t for b in batchlog.read(blocker / "batches.jsonl")[0]] == [3.0]


def test_first_release_lines_read_and_damaged_lines_are_counted(tmp_path: Path) -> None:
    old = {"t": 1.0e9, "stage": "drain", "device": "cuda:0", "gpu": "0", "pid": 1,
           "genes": 64, "seconds": 4.0, "rate": 16.0, "ema": None, "baseline": None,
           "streak": 0, "factor": 5}  # the first release wrote no "v"
    later = {**old, "v": batchlog.VERSION + 1}
    path = tmp_path / "batches.jsonl"
    path.write_text("\n".join([
        json.dumps(old), json.dumps(later), json.dumps({**old, "genes": "many"}),
        json.dumps({**old, "v": "1"}), json.dumps({**old, "factor": 0}), "[1, 2]",
        "not json", "", json.dumps(old)[:20]]) + "\n")
    batches, bad = batchlog.read(path)
    assert len(batches) == 1 and batches[0].genes == 64.0 and bad == 7
    assert batchlog.read(tmp_path / "missing") == ([], 0)


def test_the_tail_counts_whole_lines_once(tmp_path: Path) -> None:
    path = tmp_path / "batches.jsonl"
    tail = batchlog.BatchTail(path)
    assert tail.poll() == 0
    w = _writer(path)
    w.append(t=1.0, genes=8.0, seconds=1.0, rate=8.0, ema=None, baseline=None, streak=0)
    w.append(t=2.0, genes=4.0, seconds=1.0, rate=4.0, ema=None, baseline=None, streak=0)
    line = path.read_bytes().splitlines(keepends=True)[0]
    with open(path, "ab") as fh:
        fh.write(line[:25])  # a worker killed mid-line
    assert tail.poll() == 12 and tail.batches == 2
    with open(path, "ab") as fh:
        fh.write(line[25:])
    assert tail.poll() == 8 and tail.genes == 20
    assert tail.last is not None and tail.last.t == 1.0
    path.write_bytes(line)  # replaced by hand: counted afresh
    assert tail.poll() == 8 and tail.genes == 8 and tail.batches == 1


def test_the_tracker_writes_through_the_one_writer(tmp_path: Path) -> None:
    from crawlguard import CrawlTracker

    tracker = CrawlTracker("s", device="cuda:1", state_dir=tmp_path, clock=lambda: 100.0,
                           env={"CUDA_VISIBLE_DEVICES": "3,4"})
    try:
        tracker.observe(genes=64, seconds=4.0)
    finally:
        tracker.close()
    batches, bad = batchlog.read(StateDir(tmp_path).batches_file("s"))
    assert bad == 0 and len(batches) == 1
    b = batches[0]
    assert (b.t, b.device, b.gpu, b.pid, b.genes, b.rate) == (100.0, "cuda:1", "4",
                                                             os.getpid(), 64.0, 16.0)


# -- vram.jsonl --------------------------------------------------------------------

def _sample(t: float, gpu: str, used: float, total: float) -> vramlog.VramSample:
    return vramlog.VramSample(t=t, gpu=gpu, used_bytes=used, total_bytes=total)


def test_vram_samples_round_trip(tmp_path: Path) -> None:
    path = StateDir(tmp_path).vram_log
    vramlog.append(path, [_sample(2.0, "1", 5, 10), _sample(1.0004, "0", 3, 10)])
    vramlog.append(path, [])
    assert all(json.loads(line)["v"] == vramlog.VERSION
               for line in path.read_text().splitlines())
    assert vramlog.read(path) == ([_sample(1.0, "0", 3, 10), _sample(2.0, "1", 5, 10)], 0)


def test_old_and_damaged_vram_lines(tmp_path: Path) -> None:
    path = tmp_path / "vram.jsonl"
    old = {"t": 1.0, "gpu": "0", "used_bytes": 1, "total_bytes": 2}
    path.write_text("\n".join([json.dumps(old), json.dumps({**old, "v": 9}),
                               json.dumps({**old, "total_bytes": 0}), "{cut"]) + "\n")
    samples, bad = vramlog.read(path)
    assert samples == [_sample(1.0, "0", 1, 2)] and bad == 3


def test_a_vram_log_that_cannot_be_written_is_a_state_error(tmp_path: Path) -> None:
    with pytest.raises(StateError):
        vramlog.append(tmp_path / "no" / "such" / "dir" / "vram.jsonl",
                       [_sample(1.0, "0", 1, 2)])


# -- any JSON-lines file ----------------------------------------------------------------

def test_jsonlines_reader(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n[1]\n\xff\n{"b":')
    assert list(jsonlines.iter_objects(path)) == [{"a": 1}, None, None, None]
    assert jsonlines.version_of({}, "v") == 1 and jsonlines.version_of({"v": 2}, "v") == 2
    assert jsonlines.version_of({"v": True}, "v") is None
    assert jsonlines.finite_number(float("nan")) is None and jsonlines.finite_number(2) == 2.0
