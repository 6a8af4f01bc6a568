"""``vram.jsonl``: VRAM samples of the rig's GPUs, one line per GPU per sample.

The one writer is ``append`` (the supervisor calls it while it waits on
workers, ``crawlguard/supervisor/vramlog.py``); the one reader is ``read``
(``crawlguard report`` charts the samples beside each shard's rates: the
evidence that a crawl happened with dedicated VRAM pinned, and that the CPU
rung let it go). A line::

    {"v": 1, "t": 1714557600.123, "gpu": "0", "used_bytes": 12724232192,
     "total_bytes": 12884901888}

``gpu`` is the NVML index as a string, like the ``gpu`` label of the metrics
and of batches.jsonl. Lines without ``v`` (the first release) read as
version 1; later versions and damaged lines are skipped and counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from crawlguard.kernel.errors import StateError

from .jsonlines import read_lines, version_of
from .schema import StateModel, Time, validate_line

VERSION = 1
VERSION_KEY = "v"


class VramSample(StateModel):
    """One line of vram.jsonl: its schema, less the version key."""

    t: Time
    gpu: str
    used_bytes: float = Field(ge=0)
    total_bytes: float = Field(gt=0)


def append(path: Path, samples: Iterable[VramSample]) -> None:
    """Append ``samples`` in one write; ``StateError`` when the file cannot take them."""
    text = "".join(json.dumps({VERSION_KEY: VERSION, "t": round(s.t, 3), "gpu": s.gpu,
                               "used_bytes": s.used_bytes, "total_bytes": s.total_bytes})
                   + "\n" for s in samples)
    if not text:
        return
    try:
        with open(path, "a", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
    except OSError as exc:
        raise StateError(f"cannot append to {path}: {exc.strerror or exc}") from exc


def parse_line(obj: Mapping[str, Any]) -> VramSample | None:
    """A sample, or ``None`` for a line of a later version or one that does not fit."""
    version = version_of(obj, VERSION_KEY)
    if version is None or version > VERSION:
        return None
    return validate_line(VramSample, obj)


def read(path: Path) -> tuple[list[VramSample], int]:
    """Every readable sample of ``path``, oldest first, and how many lines were not."""
    samples, bad = read_lines(path, parse_line)
    samples.sort(key=lambda s: s.t)
    return samples, bad
