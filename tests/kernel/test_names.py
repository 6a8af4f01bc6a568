"""crawlguard.kernel.names: the one shard/stage name type, and every boundary that parses it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crawlguard.kernel.errors import UnsafeNameError
from crawlguard.kernel.names import PATTERN, ShardName, is_env_name
from crawlguard.kernel.statedir import StateDir

UNSAFE = ["", "..", "../etc", "a/b", "a\\b", ".hidden", "-x", "a..b", "x" * 129, "con",
          "NUL.txt", "com1", "Lpt9", "a ", "é", "a\x00b", "trailing.", "a\n", "a\r\n",
          "a b", "a:b", 'a"b', 7, None, b"bytes"]


@pytest.mark.parametrize("name", ["confluence", "slack__eng-oncall", "a", "A.b-c_d", "x" * 128,
                                  "com10", "console", "9lives"])
def test_safe_names_parse_to_the_type_and_stay_equal(name: str) -> None:
    parsed = ShardName.parse(name)
    assert type(parsed) is ShardName and parsed == name and isinstance(parsed, str)
    assert ShardName.parse(parsed) is parsed  # parsing again at an inner layer is free
    assert f"{parsed}" == name and repr(parsed) == repr(name)


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_refused_with_the_kind_named(name: object) -> None:
    with pytest.raises(UnsafeNameError) as err:
        ShardName.parse(name, "stage")
    assert err.value.kind == "stage" and str(err.value).startswith("stage ")
    assert isinstance(err.value, ValueError)  # callers of the first release caught that


def test_a_trailing_newline_is_refused() -> None:
    # re's '$' matches before a final newline; the old per-module regexes let "a\n" through.
    with pytest.raises(UnsafeNameError):
        ShardName.parse("confluence\n")


@given(st.text(max_size=140))
def test_a_parsed_name_is_a_single_plain_path_component(text: str) -> None:
    try:
        name = ShardName.parse(text)
    except UnsafeNameError:
        return
    assert Path(name).name == name and name not in (".", "..") and not name.endswith(".")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)


def test_statedir_and_its_old_names_use_the_type(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    assert type(ShardName.parse("a")) is ShardName
    for name in ("b", "a", "con", "..x"):
        (tmp_path / "shards" / name).mkdir(parents=True)
    listed = state.shards()  # a directory listing is a boundary: unsafe names are skipped
    assert listed == ["a", "b"] and all(type(s) is ShardName for s in listed)
    with pytest.raises(UnsafeNameError):
        state.batches_file("a..b")
    with pytest.raises(UnsafeNameError):
        state.baseline_file("a", "../stage", "cpu")


def test_the_openapi_pattern_agrees_with_the_type() -> None:
    import re

    for name in ["a", "A.b-c_d", "x" * 128]:
        assert re.match(PATTERN, name)
    assert not re.match(PATTERN, "x" * 129) and not re.match(PATTERN, "-x")


def test_env_names() -> None:
    assert is_env_name("BGEM3_DEVICE") and is_env_name("_x1")
    for bad in ("", "1A", "A-B", "A B", "A\n", "É"):
        assert not is_env_name(bad)


def test_the_tracker_parses_its_names_once(tmp_path: Path) -> None:
    from crawlguard import CrawlTracker

    tracker = CrawlTracker("confluence", stage="backfill", device="cpu", state_dir=tmp_path)
    try:
        assert type(tracker.shard) is ShardName and type(tracker.stage) is ShardName
    finally:
        tracker.close()
    with pytest.raises(UnsafeNameError):
        CrawlTracker("../x", state_dir=tmp_path)
    with pytest.raises(UnsafeNameError):
        CrawlTracker("ok", stage='a"b', state_dir=tmp_path)


def test_clients_parse_a_shard_before_it_goes_into_a_url(tmp_path: Path) -> None:
    from crawlguard.report.evidence import load_run
    from crawlguard.sidecar.client import SidecarClient
    from tests.helpers import free_port

    # Nothing listens there: refusing without a request is the only way to pass.
    with SidecarClient(f"http://127.0.0.1:{free_port()}", "t") as client:
        for call in (lambda: client.shard("../v1/pause"), lambda: client.reset("a/b"),
                     lambda: client.rung("con", "next")):
            with pytest.raises(UnsafeNameError):
                call()
    with pytest.raises(UnsafeNameError):
        load_run(tmp_path, ["../elsewhere"])


def test_the_http_path_parameter_is_parsed_by_the_type(tmp_path: Path) -> None:
    from crawlguard.sidecar.app import _shard

    assert type(_shard("confluence")) is ShardName
    with pytest.raises(UnsafeNameError):
        _shard("con")
    # The live API's answers to unsafe names (422, nothing touched) are in
    # tests/sidecar/test_api.py.
