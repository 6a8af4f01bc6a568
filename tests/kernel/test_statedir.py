from __future__ import annotations

import json
from pathlib import Path

import pytest

from crawlguard.kernel.devices import gpu_label, parse_device
from crawlguard.kernel.errors import CorruptStateError, UnsafeNameError
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.statedir import StateDir, read_json, write_json_atomic


@pytest.mark.parametrize("name", ["confluence", "slack__eng-oncall", "a", "A.b-c_d", "x" * 128])
def test_safe_names(name: str) -> None:
    assert ShardName.parse(name) == name


@pytest.mark.parametrize("name", ["", "..", "../etc", "a/b", "a\\b", ".hidden", "-x", "a..b",
                                  "x" * 129, "con", "NUL.txt", "com1", "a ", "é", "a\x00b",
                                  "trailing.", 7, None])
def test_unsafe_names(name: object) -> None:
    with pytest.raises(UnsafeNameError):
        ShardName.parse(name)


def test_devices() -> None:
    assert parse_device("cuda:0") == "cuda:0"
    assert gpu_label("cuda:3") == "3"
    assert gpu_label("cuda") == "0"
    assert gpu_label("cpu") == ""
    for bad in ("cuda:", "CUDA:0", "cuda:0/..", "", "cpu:x"):
        with pytest.raises(UnsafeNameError):
            parse_device(bad)


def test_paths_stay_inside_the_state_dir(tmp_path: Path) -> None:
    st = StateDir(tmp_path)
    path = st.baseline_file("confluence", "backfill", "cuda:0")
    assert path.parent == tmp_path / "shards" / "confluence"
    assert ":" not in path.name
    with pytest.raises(UnsafeNameError):
        st.ladder_file("../../etc")


def test_atomic_write_and_corrupt_read(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.json"
    write_json_atomic(path, {"x": 1})
    assert read_json(path) == {"x": 1}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]  # no temp file left
    assert read_json(tmp_path / "missing.json") is None
    path.write_text('{"x": 1')  # cut short, as after a crash mid-write by another tool
    with pytest.raises(CorruptStateError):
        read_json(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(CorruptStateError):
        read_json(path)


def test_shards_listing_skips_unsafe_dirs(tmp_path: Path) -> None:
    st = StateDir(tmp_path)
    (tmp_path / "shards" / "ok").mkdir(parents=True)
    (tmp_path / "shards" / "bad name").mkdir()
    assert st.shards() == ["ok"]
    assert json.loads(json.dumps(st.shards())) == ["ok"]
