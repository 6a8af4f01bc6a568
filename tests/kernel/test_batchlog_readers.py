"""batches.jsonl has two readers, ``read`` (the report) and ``BatchTail`` (the supervisor,
``up``'s live view, the drill): docs/integration.md says they accept exactly the same lines.
Fed the writer's lines mixed with any bytes at all, they must keep the same batches."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawlguard.kernel.formats import batchlog

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
