"""Every reader of a state file the sidecar owns, against hostile files and arbitrary JSON.

ladder.json (``ladderfile``, through ``LadderStore`` and ``resume_env`` too),
sidecar.json (``pausefile``) and audit.jsonl (``auditlog``) each have one schema;
whatever is on disk, a reader returns what the schema allows or refuses with
``CorruptStateError`` (a line: skipped and counted). Never another exception:
not OverflowError for ``1e400``, not RecursionError for deep nesting, not
IsADirectoryError for a directory in the file's place.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawlguard.kernel.errors import CorruptStateError, ResumeEnvError
from crawlguard.kernel.formats import auditlog, ladderfile, pausefile
from crawlguard.kernel.statedir import MAX_JSON_BYTES, StateDir
from crawlguard.sidecar.resume import resume_env
from crawlguard.sidecar.state import LadderStore, from_file, to_file

DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE: dict[str, Callable[[Path], None]] = {
    "seq 1e400": lambda p: p.write_text('{"schema": 1, "rung": "none", "seq": 1e400}'),
    "at 1e400": lambda p: p.write_text('{"history": [{"kind": "rung", "at": 1e400}]}'),
    "deep arrays": lambda p: p.write_text(DEEP),
    "deep env": lambda p: p.write_text('{"env": ' + "[" * 50_000 + "]" * 50_000 + "}"),
    "a directory": lambda p: p.mkdir(),
    "not an object": lambda p: p.write_text("[1, 2]"),
    "wrong rung": lambda p: p.write_text('{"rung": "gpu"}'),
    "env of numbers": lambda p: p.write_text('{"env": {"BGEM3_DEVICE": 1}}'),
    "history an object": lambda p: p.write_text('{"history": {"kind": "rung"}}'),
    "pending without id": lambda p: p.write_text('{"pending": {"rung": "cpu", "decided_at": 1}}'),
    "pid a bool": lambda p: p.write_text(
        '{"pending": {"id": "r1", "rung": "cpu", "decided_at": 1, '
        '"worker": {"pid": true, "create_time": 1}}}'),
    "time past year 9999": lambda p: p.write_text('{"last_rung_decided_at": 1e300}'),
    "a 5000-digit integer": lambda p: p.write_text('{"crawls": ' + "9" * 5000 + "}"),
    "not UTF-8": lambda p: p.write_bytes(b'{"reason": "\xff"}'),
    "too large": lambda p: p.write_text('{"seen": ["' + "x" * MAX_JSON_BYTES + '"]}'),
}
if hasattr(os, "mkfifo"):
    # Opening a FIFO would wait for a writer forever: it must be refused unopened.
    HOSTILE["a FIFO"] = lambda p: os.mkfifo(p)


def plant(state_dir: Path, shard: str, case: str) -> Path:
    path = StateDir(state_dir).ladder_file(shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    HOSTILE[case](path)
    return path


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_each_hostile_ladder_is_corrupt_for_every_reader(tmp_path: Path, case: str) -> None:
    path = plant(tmp_path, "s", case)
    with pytest.raises(CorruptStateError, match="reset the shard"):
        ladderfile.read(path)
    with pytest.raises(CorruptStateError):
        LadderStore(StateDir(tmp_path)).load("s")
    with pytest.raises(ResumeEnvError) as err:
        resume_env(tmp_path, "s")
    assert isinstance(err.value.__cause__, CorruptStateError)


# -- arbitrary JSON ----------------------------------------------------------------

text = st.text(max_size=12)
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**60)
           | st.floats() | text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(text, inner, max_size=4), max_leaves=25)
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_ladder() -> dict[str, Any]:
    return {"schema": 1, "shard": "s", "crawls": 2, "rung": "cpu",
            "env": {"BGEM3_DEVICE": "cpu"},
            "pending": {"id": "r2", "rung": "cpu", "decided_at": 5.0,
                        "worker": {"pid": 7, "create_time": 1.5}, "source": "alert",
                        "reason": "x"},
            "episode": {"worker": "7-1500", "opened_at": 5.0, "alertname": "BFMShardCrawl",
                        "fingerprint": "ab", "starts_at": 4.0},
            "last_rung_decided_at": 5.0, "last_rung_effective_at": None, "seq": 2,
            "seen": ["firing|ab|4.000000"],
            "history": [{"kind": "rung", "at": 5.0, "id": "r2", "rung": "cpu",
                         "worker": {"pid": 7, "create_time": 1.5}}]}


def _mutations() -> st.SearchStrategy[Any]:
    """A valid ladder with one key (at the top, in the pending rung or in a history
    entry) replaced by arbitrary JSON, or removed."""
    def mutate(where: str, key: str, value: Any, drop: bool) -> Any:
        doc = _valid_ladder()
        target = (doc if where == "top" else doc["pending"] if where == "pending"
                  else doc["history"][0])
        if drop:
            target.pop(key, None)
        else:
            target[key] = value
        return doc

    return st.builds(mutate, st.sampled_from(["top", "pending", "entry"]),
                     st.sampled_from(sorted({*_valid_ladder(), *_valid_ladder()["pending"],
                                             "at", "kind", "worker", "shared_bytes"})),
                     json_values, st.booleans())


def _write_json(path: Path, value: Any) -> None:
    # allow_nan: the JSON of a hand-edited file may hold what Python reads as inf or NaN.
    path.write_text(json.dumps(value, allow_nan=True), encoding="utf-8")


def _finite_everywhere(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite_everywhere(v) for v in value)
    if isinstance(value, dict):
        return all(_finite_everywhere(v) for v in value.values())
    return True


@FUZZ
@given(json_values | _mutations())
def test_the_ladder_reader_takes_any_json(tmp_path: Path, value: Any) -> None:
    path = tmp_path / "shards" / "s" / "ladder.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, value)
    try:
        doc = ladderfile.read(path)
    except CorruptStateError:
        return
    assert doc is not None and _finite_everywhere(ladderfile.dump(doc))
    # What the schema accepts, the sidecar's mapping and writer take and give back.
    state = from_file("s", doc)
    store = LadderStore(StateDir(tmp_path))
    store.save(state)
    assert store.load("s") == state
    assert from_file("s", to_file(state)) == state
    assert resume_env(tmp_path, "s") == dict(doc.env)


@FUZZ
@given(json_values | st.fixed_dictionaries(
    {"paused": json_values | st.booleans()}, optional={"since": json_values,
                                                        "reason": json_values}))
def test_the_pause_switch_reader_takes_any_json(tmp_path: Path, value: Any) -> None:
    path = tmp_path / "sidecar.json"
    _write_json(path, value)
    try:
        switch = pausefile.read(path)
    except CorruptStateError:
        return
    assert switch is not None and isinstance(switch.paused, bool)
    assert value["paused"] is switch.paused


@FUZZ
@given(st.lists(json_values | st.fixed_dictionaries(
    {"at": json_values, "event": json_values},
    optional={"shard": json_values, "rung": json_values}), max_size=6))
def test_the_audit_reader_takes_any_json(tmp_path: Path, lines: list[Any]) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in lines) + DEEP + "\n{cut",
                    encoding="utf-8")
    read, bad = auditlog.read(path)
    assert len(read) + bad == len(lines) + 2  # the deep line and the cut one are bad
    for line in read:
        assert isinstance(line.event, str) and math.isfinite(line.at)


@pytest.mark.parametrize("case", sorted(set(HOSTILE) - {"a directory", "a FIFO"}))
def test_hostile_pause_switches_are_corrupt(tmp_path: Path, case: str) -> None:
    path = tmp_path / "sidecar.json"
    HOSTILE[case](path)
    with pytest.raises(CorruptStateError):
        pausefile.read(path)


def test_the_audit_writer_writes_what_the_reader_reads(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text(auditlog.line(5.0, "rung_done", {"shard": "s", "rung": "cpu",
                                                     "worker": {"pid": 1}, "odd": Path("x")})
                    + "\n")
    [line], bad = auditlog.read(path)
    assert bad == 0 and (line.at, line.event, line.shard, line.rung) == (5.0, "rung_done",
                                                                         "s", "cpu")
    assert line.model_dump()["odd"] == "x"
