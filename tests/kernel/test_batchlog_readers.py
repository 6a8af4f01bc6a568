"""batches.jsonl has two readers, ``read`` (the report) and ``BatchTail`` (the supervisor,
``up``'s live view, the drill): docs/integration.md says they accept exactly the same lines.
Fed the writer's lines mixed with any bytes at all, they must keep the same batches."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawlguard.kernel.formats import batchlog
from crawlguard.kernel.formats.batchlog import BatchWriter, read

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


def _good(i: int) -> bytes:
    return (json.dumps({"v": 1, "stage": "backfill", "device": "cuda:0", "gpu": "0", "pid": 42,
                        "factor": 5.0, "t": float(i), "genes": 8.0, "seconds": 1.0,
                        "rate": 8.0, "ema": None, "baseline": None, "streak": 0})).encode()


LINE = st.one_of(
    st.integers(0, 1000).map(_good),
    st.binary(max_size=40),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.integers(0, 1000).map(lambda i: _good(i).decode().encode("utf-16")),  # JSON, not UTF-8
    st.sampled_from([b"", b" ", b"\r", b"\x0b", b"\x1c", "\u2028".encode(), b"\xff\xfe"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, max_size=12))
def test_read_and_the_tail_keep_the_same_batches(tmp_path: Path, lines: list[bytes]) -> None:
    path = tmp_path / "batches.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    read, _ = batchlog.read(path)
    tail = batchlog.BatchTail(path, keep=lambda batch: True)
    tail.poll()
    assert tail.kept == read
    assert tail.batches == len(read)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (ENOSPC)")
def test_a_full_disk_loses_lines_counted_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 18: a disk that fills after the worker started must not fail silently
    (nor once per batch): one warning, every lost line counted, the batch goes on."""
    caplog.set_level(logging.INFO, logger="crawlguard")
    writer = BatchWriter(Path("/dev/full"), stage="backfill", device="cuda:0", gpu="0",
                         pid=os.getpid(), factor=5.0)
    for i in range(5):
        writer.append(t=float(i), genes=8, seconds=1.0, rate=8.0, ema=None, baseline=None,
                      streak=0)
    writer.close()
    said = [r for r in caplog.records if "/dev/full" in r.getMessage()]
    assert writer.lost == 5
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "No space left" in said[0].getMessage()


def test_a_log_that_cannot_be_opened_recovers_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="crawlguard")
    blocker = tmp_path / "shards"
    blocker.write_text("a file where the shard's directory belongs")
    writer = BatchWriter(blocker / "s" / "batches.jsonl", stage="backfill", device="cpu",
                         gpu="", pid=os.getpid(), factor=5.0)

    def one(t: float) -> None:
        writer.append(t=t, genes=8, seconds=1.0, rate=8.0, ema=None, baseline=None, streak=0)

    one(1.0)
    one(2.0)
    blocker.unlink()
    one(3.0)
    writer.close()
    assert writer.lost == 2
    lines = [r.getMessage() for r in caplog.records if "batches.jsonl" in r.getMessage()]
    assert len(lines) == 2 and "cannot be opened" in lines[0] and lines[1].endswith("recovered")
    batches, _ = read(blocker / "s" / "batches.jsonl")
    assert [b.t for b in batches] == [3.0]
