"""Reading a shard's progress from ``shards/<shard>/batches.jsonl``, incrementally.

The CrawlTracker appends one line per finished batch. The supervisor measures
progress with it (a relaunch that adds no genes is futile) and ``up`` shows it
live. It is read from the last offset on, and a trailing line without its
newline (the writer is mid-write, or was killed mid-write) is left for the
next poll, so nothing is counted twice or half.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class BatchLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.genes = 0.0
        self.batches = 0
        self.last: dict[str, Any] | None = None

    def poll(self) -> float:
        """Read what was appended since the last poll; returns the new genes."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, 2)
                size = fh.tell()
                if size < self.offset:  # replaced or truncated by hand: start over
                    self.offset, self.genes, self.batches = 0, 0.0, 0
                fh.seek(self.offset)
                chunk = fh.read(size - self.offset)
        except FileNotFoundError:
            return 0.0
        except OSError:
            return 0.0
        end = chunk.rfind(b"\n")
        if end < 0:
            return 0.0
        self.offset += end + 1
        added = 0.0
        for raw in chunk[:end].splitlines():
            try:
                row = json.loads(raw)
                genes = float(row["genes"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a crash before its newline was written
            added += genes
            self.batches += 1
            self.last = row
        self.genes += added
        return added
