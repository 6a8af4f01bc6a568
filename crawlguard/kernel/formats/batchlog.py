"""``shards/<shard>/batches.jsonl``: one line per finished batch of a shard.

One writer per file: ``BatchWriter``, which the worker's ``CrawlTracker``
holds; every worker of the shard, in turn, appends to the same file. Readers:
``read`` (the report and the demo's summary, the whole file) and
``BatchTail`` (the supervisor's progress and ``up``'s live view, incrementally).
Both accept exactly the lines ``parse_line`` accepts. A line::

    {"v": 1, "stage": "backfill", "device": "cuda:0", "gpu": "0", "pid": 4242,
     "factor": 5.0, "t": 1714557600.123, "genes": 64.0, "seconds": 4.2,
     "rate": 15.2, "ema": 15.3, "baseline": 15.3, "streak": 0}

``t`` is when the batch ended (Unix seconds); ``gpu`` the NVML index, '' off
CUDA; ``ema`` and ``baseline`` are null until known. Optional keys: ``tokens``
(non-padding tokens), ``total`` and ``remaining`` (progress), ``work`` (the
batch's work in gene-equivalents: the seconds its shape takes at the
baseline's pace, times the baseline; absent before the baseline). Lines without ``v`` were
written by the first release and read as version 1; lines of a later version,
cut short by a crash or damaged otherwise are skipped and counted.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from crawlguard.kernel.devices import parse_device
from crawlguard.kernel.logs import Outage, get_logger
from crawlguard.kernel.names import ShardName

from .jsonlines import parse_object, read_lines, version_of
from .schema import Pid, StateModel, Time, validate_line

VERSION = 1
VERSION_KEY = "v"
# Binary on Windows too: text mode would turn each "\n" into "\r\n" behind os.write.
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
log = get_logger(__name__)


class Batch(StateModel):
    """One line of batches.jsonl: its schema, less the version key."""

    t: Time
    stage: str
    device: str
    gpu: str
    pid: Pid
    genes: float
    seconds: float
    rate: float
    ema: float | None
    baseline: float | None = Field(gt=0)
    streak: int
    factor: float = Field(gt=0)
    tokens: float | None = None
    """Non-padding tokens of the batch, when the build's batches carry a mask."""
    total: int | None = None
    """The genes the worker's tracker was told to do (``CrawlTracker(total=)``)."""
    remaining: float | None = None
    """Of ``total``, what was left after this batch."""
    work: float | None = None
    """Gene-equivalents: the batch's seconds at its baseline's pace x the baseline.
    Lines without it (genes-only trackers of the first release) count their genes."""

    @property
    def threshold(self) -> float | None:
        return None if self.baseline is None else self.baseline / self.factor

    @property
    def expected_seconds(self) -> float | None:
        """Seconds the batch takes at its (stage, device) baseline's pace."""
        if self.baseline is None:
            return None
        return (self.genes if self.work is None else self.work) / self.baseline

    @property
    def healthy_seconds(self) -> float | None:
        """The batch's time had it run at the baseline's pace: its expected seconds when
        it ran slower, its own when faster (an expected time may be a lenient guess)."""
        expected = self.expected_seconds
        return None if expected is None else min(expected, self.seconds)

    @property
    def work_rate(self) -> float:
        """The batch's work (gene-equivalents; its genes without ``work``) per second:
        its genes/s had it been of the baseline's shape."""
        return (self.genes if self.work is None else self.work) / max(self.seconds, 1e-6)

    @property
    def slow(self) -> bool:
        """Slower than ``factor`` times its expected seconds: below the crawl threshold."""
        expected = self.expected_seconds
        return expected is not None and self.seconds > self.factor * expected

    @property
    def lost_seconds(self) -> float:
        """Seconds beyond what the batch would have taken at its baseline, if slow."""
        expected = self.expected_seconds
        if expected is None or not self.slow:
            return 0.0
        return max(self.seconds - expected, 0.0)


class BatchWriter:
    """Appends the lines of one worker's (stage, device) to a shard's batches.jsonl.

    The one writer of the format. Each line is one ``os.write`` on an
    ``O_APPEND`` descriptor: appends from several processes never interleave,
    and nothing is buffered to lose on SIGKILL. The file is opened at the
    first line; a file that cannot be opened or written loses lines, never
    the batch (the metrics are the alerting path, this file is evidence). The
    loss is logged once (a full disk would otherwise say nothing, or say it
    every batch), counted in ``lost``, and its end logged once.
    """

    def __init__(self, path: Path, *, stage: str, device: str, gpu: str, pid: int,
                 factor: float) -> None:
        self.path = path
        self._fd: int | None = None
        self.lost = 0
        """Lines not written (the file could not be opened or written), since start."""
        self._outage = Outage(log, f"batch log {path}")
        # Everything interpolated unquoted is validated, so plain %-formatting is JSON,
        # and json.dumps would dominate the tracker's observe() (bench/bench_observe.py).
        stage, device = ShardName.parse(stage, "stage"), parse_device(device)
        if gpu and not gpu.isdigit():
            raise ValueError(f"gpu must be an NVML index or '', got {gpu!r}")
        self._format = (
            f'{{"{VERSION_KEY}":{VERSION},"stage":"{stage}","device":"{device}",'
            f'"gpu":"{gpu}","pid":{int(pid)},"factor":{float(factor)!r},'
            '"t":%.3f,"genes":%r,"seconds":%r,"rate":%r,"ema":%s,"baseline":%s,"streak":%d')

    def append(self, t: float, genes: float, seconds: float, rate: float,
               ema: float | None, baseline: float | None, streak: int, *,
               tokens: float | None = None, total: int | None = None,
               remaining: float | None = None, work: float | None = None) -> None:
        fd = self._fd
        if fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = self._fd = os.open(self.path, _OPEN_FLAGS, 0o644)
            except OSError as exc:
                self._lose("cannot be opened (%s)", exc)
                return
        line = self._format % (t, genes, seconds, rate, _num(ema), _num(baseline), streak)
        if tokens is not None:
            line += f',"tokens":{float(tokens)!r}'
        if total is not None:
            line += f',"total":{int(total)},"remaining":{float(remaining or 0.0)!r}'
        if work is not None:
            line += f',"work":{float(work)!r}'
        data = (line + "}\n").encode()
        try:
            written = os.write(fd, data)
        except OSError as exc:
            self._lose("cannot be written (%s)", exc)
            return
        if written < len(data):  # the disk filled mid-line: readers skip the torn line
            self._lose("lost a line cut short at %d of %d bytes", written, len(data))
            return
        self._outage.recovered()

    def _lose(self, why: str, *args: object) -> None:
        self.lost += 1
        self._outage.failed(why + "; its batch lines are dropped until it can be written "
                            "(the tracker's in-memory counts go on)", *args)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _num(value: float | None) -> str:
    return "null" if value is None else repr(value)


def parse_line(obj: Mapping[str, Any]) -> Batch | None:
    """A batch, or ``None`` for a line of a later version or one that does not fit ``Batch``."""
    version = version_of(obj, VERSION_KEY)
    if version is None or version > VERSION:
        return None
    return validate_line(Batch, obj)


def read(path: Path) -> tuple[list[Batch], int]:
    """Every readable batch of ``path`` in file order, and how many lines were not."""
    return read_lines(path, parse_line)


class BatchTail:
    """Reads what was appended to a batches.jsonl since the last poll.

    A trailing line without its newline (the writer is mid-write, or was
    killed mid-write) is left for the next poll, so nothing is counted twice
    or half. A file that shrank was replaced by hand: it is read afresh.

    ``paced_seconds`` / ``paced_genes``: over the batches of the last line's
    worker that have a baseline, their ``healthy_seconds`` and their genes: the
    healthy time per gene of what that worker has embedded so far (``up``'s ETA).
    ``shard_total``: the largest ``total`` of any line: what the shard's first worker
    was told, as a relaunched worker is told only the rest (``up``'s shard-wide progress).
    """

    def __init__(self, path: Path, keep: Callable[[Batch], bool] | None = None) -> None:
        self.path = path
        self.offset = 0
        self.genes = 0.0
        self.batches = 0
        self.last: Batch | None = None
        self.keep = keep
        """Batches it accepts are collected in ``kept`` (``crawlguard drill``: one worker's)."""
        self.kept: list[Batch] = []
        self.paced_seconds = 0.0
        self.paced_genes = 0.0
        self.shard_total: int | None = None

    def poll(self) -> float:
        """Read what was appended since the last poll; returns the new genes."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, 2)
                size = fh.tell()
                if size < self.offset:
                    self.offset, self.genes, self.batches, self.kept = 0, 0.0, 0, []
                    self.last, self.paced_seconds, self.paced_genes = None, 0.0, 0.0
                    self.shard_total = None
                fh.seek(self.offset)
                chunk = fh.read(size - self.offset)
        except OSError:  # not there yet, or unreadable for a moment: try next poll
            return 0.0
        end = chunk.rfind(b"\n")
        if end < 0:
            return 0.0
        self.offset += end + 1
        added = 0.0
        for raw in chunk[:end].splitlines():
            batch = _parse_raw(raw)
            if batch is None:
                continue  # a line cut by a crash before its newline was written
            added += batch.genes
            self.batches += 1
            if self.last is not None and (self.last.pid, self.last.device) != (
                    batch.pid, batch.device):
                self.paced_seconds = self.paced_genes = 0.0
            healthy = batch.healthy_seconds
            if healthy is not None:
                self.paced_seconds += healthy
                self.paced_genes += batch.genes
            self.last = batch
            if batch.total is not None and batch.total > (self.shard_total or 0):
                self.shard_total = batch.total
            if self.keep is not None and self.keep(batch):
                self.kept.append(batch)
        self.genes += added
        return added


def _parse_raw(raw: bytes) -> Batch | None:
    obj = parse_object(raw)
    return None if obj is None else parse_line(obj)
