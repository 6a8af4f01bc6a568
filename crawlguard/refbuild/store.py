"""Per-file outputs: written atomically, recognised as complete, resumed by file.

One output file per input file, ``<data>/<shard>/output/<stem>.json``::

    {"input": "0003.jsonl", "genes": 48, "device": "cpu",
     "vectors": [["confluence:0003:00000", "<base64 float32 x DIM>"], ...]}

Written to a temporary file in the same directory, fsynced, renamed over the
final name, then the directory is fsynced (``statedir.write_json_atomic``): a
kill at any moment leaves either no output (the file is redone on resume) or a
complete one (it is skipped). Nothing is ever appended, so nothing can be
written twice. A temporary file left by a killed worker is removed by the next
worker of the shard before it starts.
"""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path

from crawlguard.kernel.errors import StateError
from crawlguard.kernel.statedir import read_json, write_json_atomic

from .corpus import shard_root
from .vectors import VECTOR_BYTES


def output_dir(data_dir: Path, shard: str) -> Path:
    return shard_root(data_dir, shard) / "output"


def output_path(data_dir: Path, shard: str, input_name: str) -> Path:
    return output_dir(data_dir, shard) / (Path(input_name).stem + ".json")


def write_output(path: Path, input_name: str, device: str,
                 vectors: list[tuple[str, bytes]]) -> None:
    write_json_atomic(path, {
        "input": input_name, "genes": len(vectors), "device": device,
        "vectors": [[gid, base64.b64encode(vec).decode("ascii")] for gid, vec in vectors],
    })


def read_output(path: Path) -> list[tuple[str, bytes]] | None:
    """The vectors of a complete output; None when there is none or it is not usable."""
    try:
        data = read_json(path)
    except StateError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("vectors"), list):
        return None
    out: list[tuple[str, bytes]] = []
    try:
        for gid, b64 in data["vectors"]:
            vec = base64.b64decode(b64, validate=True)
            if len(vec) != VECTOR_BYTES:
                return None
            out.append((str(gid), vec))
    except (TypeError, ValueError):
        return None
    if data.get("genes") != len(out):
        return None
    return out


def output_device(path: Path) -> str | None:
    try:
        data = read_json(path)
    except StateError:
        return None
    return str(data["device"]) if isinstance(data, dict) and "device" in data else None


def is_complete(path: Path, expected_genes: int) -> bool:
    found = read_output(path)
    return found is not None and len(found) == expected_genes


def remove_stale_temporaries(data_dir: Path, shard: str) -> int:
    """Delete temporary files a killed worker left behind; returns how many."""
    folder = output_dir(data_dir, shard)
    removed = 0
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StateError(f"cannot list {folder}: {exc.strerror}") from exc
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(entry)
                removed += 1
    return removed
