"""The workers' metrics files: their format, their one writer and their one reader.

The format is prometheus_client's multiprocess file format, so that files written
before crawlguard had its own writer still read, and so that the files mean to
any reader what they meant before. It is small, and read and written here
without the library's private module (``prometheus_client.mmap_dict``)::

    file    := used:int32  pad:4 bytes  entry*  (zeros up to the file's size)
    entry   := n:int32  key:n bytes of UTF-8  pad to a multiple of 8  value:float64
               timestamp:float64

Integers and floats are in the machine's byte order, as the library writes them;
``used`` counts the bytes from the file's start to the end of the last entry. A
file is created 64 KiB long (sparse) and doubled when an entry does not fit. The
key is JSON: ``[metric, sample name, {label: value}, help]``.

crawlguard writes the files directly instead of through ``prometheus_client.Gauge``
because the library chooses multiprocess mode from ``PROMETHEUS_MULTIPROC_DIR``
once, at import time, for the whole process: a build that imported
prometheus_client before creating a ``CrawlTracker`` (or that serves its own
metrics) would otherwise silently write nowhere, and setting that variable would
leak into the build's children. Writing the files directly also makes a batch
cost a handful of mmap stores (see bench/bench_observe.py).

File names (``parse_name``): ``counter_<key>.db`` (a worker's counters),
``gauge_livemostrecent_<key>.db`` (its gauges, which the exporter deletes once
that worker is dead: a dead worker's gauges vanish, its counters keep counting)
and ``counter_archive.db`` (the dead workers' counters, ``compaction``). ``<key>``
is the worker's identity ``<pid>-<creation ms>``, so a reused pid never continues
a dead worker's files. Any other ``*.db`` name is no file of crawlguard's.

The reader (``read``) checks everything: the header, every entry's bounds, that
each key is JSON of the shape above with Prometheus names (a counter's sample
is ``<metric>_total``, a gauge's is the metric), that a counter is finite and
not negative. A file that fails any check is ``BadMetricsFile`` as a whole: the
exporter quarantines it (``compaction``), it is never merged, and the scrape
goes on. ``merge`` sums counters and takes each gauge's most recent value.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client.metrics_core import Metric

from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.statedir import check_present
from crawlguard.kernel.workers import WorkerIdentity

_log = get_logger(__name__)
GAUGE_MODE = "livemostrecent"
ARCHIVE = "counter_archive.db"
INITIAL_SIZE = 1 << 16

_INT = struct.Struct("i")
_DOUBLES = struct.Struct("dd")
_HEADER = HEADER_BYTES = 8
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

Kind = Literal["counter", "gauge"]


class BadMetricsFile(ValueError):
    """A metrics file that is not one crawlguard wrote, or was cut short."""


# -- names --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileName:
    kind: Kind
    worker: WorkerIdentity | None
    """Whose file it is; None for the archive of the dead workers' counters."""


def parse_name(name: str) -> FileName | None:
    """What the file called ``name`` (a base name) holds; None for a name not crawlguard's."""
    if name == ARCHIVE:
        return FileName("counter", None)
    if not name.endswith(".db"):
        return None
    stem = name[:-len(".db")]
    for kind, prefix in (("counter", "counter_"), ("gauge", f"gauge_{GAUGE_MODE}_")):
        if stem.startswith(prefix):
            worker = WorkerIdentity.from_key(stem[len(prefix):])
            return None if worker is None else FileName(kind, worker)  # type: ignore[arg-type]
    return None


def file_name(kind: Kind, worker: WorkerIdentity) -> str:
    """The name of ``worker``'s file of ``kind``."""
    prefix = "counter" if kind == "counter" else f"gauge_{GAUGE_MODE}"
    return f"{prefix}_{worker.key}.db"


# -- keys ---------------------------------------------------------------------------------

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Entry:
    metric: str
    sample: str
    labels: Labels
    """Sorted by label name."""
    help: str
    value: float
    timestamp: float


def encode_key(metric: str, sample: str, labels: dict[str, str], help_text: str) -> str:
    """The key of a series (prometheus_client's encoding: sorted JSON)."""
    return json.dumps([metric, sample, labels, help_text], sort_keys=True)


_KEYS: dict[tuple[Kind, str], tuple[str, str, Labels, str]] = {}
"""Keys already checked: every scrape reads the same few keys in every file."""
_KEYS_MAX = 10_000


def _entry(kind: Kind, raw: str, value: float, timestamp: float) -> Entry:
    checked = _KEYS.get((kind, raw))
    if checked is None:
        checked = _check_key(kind, raw)
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        _KEYS[(kind, raw)] = checked
    metric, sample, labels, help_text = checked
    if kind == "counter" and not (math.isfinite(value) and value >= 0):
        raise BadMetricsFile(f"counter {sample} is {value!r}")
    if not math.isfinite(timestamp):
        raise BadMetricsFile(f"{sample} has timestamp {timestamp!r}")
    return Entry(metric, sample, labels, help_text, value, timestamp)


def _check_key(kind: Kind, raw: str) -> tuple[str, str, Labels, str]:
    try:
        key = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadMetricsFile(f"a key is not JSON: {raw[:80]!r}") from exc
    if not (isinstance(key, list) and len(key) == 4):
        raise BadMetricsFile(f"a key is not [metric, sample, labels, help]: {raw[:80]!r}")
    metric, sample, labels, help_text = key
    if not (isinstance(metric, str) and _METRIC_NAME.match(metric)):
        raise BadMetricsFile(f"a key names no metric: {raw[:80]!r}")
    if sample != (f"{metric}_total" if kind == "counter" else metric):
        raise BadMetricsFile(f"a key's sample {sample!r} is no {kind} of {metric!r}")
    if not (isinstance(labels, dict) and all(
            isinstance(k, str) and _LABEL_NAME.match(k) and not k.startswith("__")
            and isinstance(v, str) for k, v in labels.items())):
        raise BadMetricsFile(f"a key's labels are not names with string values: {raw[:80]!r}")
    if not isinstance(help_text, str):
        raise BadMetricsFile(f"a key's help is not a string: {raw[:80]!r}")
    return metric, sample, tuple(sorted(labels.items())), help_text


# -- reading ------------------------------------------------------------------------------

def read(path: str | os.PathLike[str], kind: Kind) -> list[Entry]:
    """Every entry of the ``kind`` file at ``path``, checked (module docstring).
    ``BadMetricsFile`` when anything does not check out; FileNotFoundError passes."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(_HEADER)
        if len(head) < _HEADER:
            raise BadMetricsFile(f"{size} bytes: shorter than the {_HEADER}-byte header")
        (used,) = _INT.unpack_from(head)
        if used == 0:
            return []  # created and sized, its header not written yet
        if used < _HEADER or used > size:
            raise BadMetricsFile(f"header says {used} bytes used of {size}")
        data = head + fh.read(used - _HEADER)
    if len(data) < used:
        raise BadMetricsFile(f"header says {used} bytes used, {len(data)} could be read")
    entries = []
    pos = _HEADER
    while pos < used:
        if pos + 4 > used:
            raise BadMetricsFile(f"an entry at byte {pos} is cut short")
        (n,) = _INT.unpack_from(data, pos)
        end = pos + 4 + n + _padding(n)
        if n < 0 or end + 16 > used:
            raise BadMetricsFile(f"the entry at byte {pos} runs past the used {used} bytes")
        try:
            raw = data[pos + 4:pos + 4 + n].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadMetricsFile(f"the key at byte {pos} is not UTF-8") from exc
        value, timestamp = _DOUBLES.unpack_from(data, end)
        entries.append(_entry(kind, raw, value, timestamp))
        pos = end + 16
    return entries


def used_bytes(path: str | os.PathLike[str]) -> int:
    """The used size in a file's header (-1 when it cannot be read): it grows exactly
    when a series is added, so a reader can tell that a file's series changed."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return -1
    return _INT.unpack(head)[0] if len(head) == 4 else -1


def _padding(n: int) -> int:
    """Pad bytes after a key of ``n`` bytes, so that its doubles are 8-byte aligned."""
    return 8 - (n + 4) % 8


# -- merging ------------------------------------------------------------------------------

def merge(files: Iterable[tuple[Kind, Sequence[Entry]]]) -> list[Metric]:
    """The series of every file as one family per metric: counters summed over the
    files, gauges the most recent value (by its timestamp) of each label set."""
    helps: dict[tuple[Kind, str], str] = {}
    counters: dict[tuple[str, str, Labels], float] = {}
    gauges: dict[tuple[str, str, Labels], tuple[float, float]] = {}
    for kind, entries in files:
        for e in entries:
            helps.setdefault((kind, e.metric), e.help)
            series = (e.metric, e.sample, e.labels)
            if kind == "counter":
                counters[series] = counters.get(series, 0.0) + e.value
            else:
                held = gauges.get(series)
                if held is None or e.timestamp > held[0]:
                    gauges[series] = (e.timestamp, e.value)
    families: dict[tuple[Kind, str], Metric] = {}
    for (kind, metric), help_text in sorted(helps.items()):
        families[(kind, metric)] = Metric(metric, help_text, kind)
    for (metric, sample, labels), value in sorted(counters.items()):
        families[("counter", metric)].add_sample(sample, dict(labels), value)
    for (metric, sample, labels), (_, value) in sorted(gauges.items()):
        families[("gauge", metric)].add_sample(sample, dict(labels), value)
    return list(families.values())


# -- writing ------------------------------------------------------------------------------

class MetricsFile:
    """One metrics file, open for writing (the one writer of the format).

    Readers in other processes read it while it is written: an entry's bytes are
    in place before ``used`` counts them, and a value is replaced by one slice
    assignment (never a pack into the mmap, which writes zeros first)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._f = open(self.path, "a+b")  # noqa: SIM115 (held open until close)
        size = os.fstat(self._f.fileno()).st_size
        if size == 0:
            self._f.truncate(INITIAL_SIZE)
            size = INITIAL_SIZE
        self._size = size
        self._m = mmap.mmap(self._f.fileno(), size)
        self._positions: dict[str, int] = {}
        (used,) = _INT.unpack_from(self._m, 0)
        if used == 0:
            used = _HEADER
            self._m[0:4] = _INT.pack(used)
        else:
            # A file of this process's identity written before (a tracker re-created):
            # find its entries, refusing what this writer did not write.
            for pos, raw in _positions(self._m, used):
                self._positions[raw] = pos
        self._used: int = used

    def _init(self, key: str) -> int:
        encoded = key.encode("utf-8")
        entry = (_INT.pack(len(encoded)) + encoded + b" " * _padding(len(encoded))
                 + _DOUBLES.pack(0.0, 0.0))
        while self._used + len(entry) > self._size:
            self._size *= 2
            self._f.truncate(self._size)
            self._m.close()
            self._m = mmap.mmap(self._f.fileno(), self._size)
        self._m[self._used:self._used + len(entry)] = entry
        self._used += len(entry)
        self._m[0:4] = _INT.pack(self._used)
        pos = self._positions[key] = self._used - 16
        return pos

    def read_value(self, key: str) -> float:
        pos = self._positions.get(key)
        if pos is None:
            pos = self._init(key)
        value: float = _DOUBLES.unpack_from(self._m, pos)[0]
        return value

    def write_value(self, key: str, value: float, timestamp: float) -> None:
        pos = self._positions.get(key)
        if pos is None:
            pos = self._init(key)
        self._m[pos:pos + 16] = _DOUBLES.pack(value, timestamp)

    def replaced(self) -> bool:
        """Whether ``path`` no longer names the file this writer holds: the exporter moved
        it to quarantine as unreadable (garbage written over it), or someone removed it.
        Its series would then be served from nowhere, and a crawl would go unseen."""
        try:
            there = os.stat(self.path)
        except OSError:
            return True
        held = os.fstat(self._f.fileno())
        return (there.st_dev, there.st_ino) != (held.st_dev, held.st_ino)

    def close(self) -> None:
        self._m.close()
        self._f.close()


def _positions(data: mmap.mmap, used: int) -> Iterable[tuple[int, str]]:
    pos = _HEADER
    while pos < used:
        (n,) = _INT.unpack_from(data, pos)
        end = pos + 4 + n + _padding(n)
        if n < 0 or end + 16 > used:
            raise BadMetricsFile(f"the entry at byte {pos} runs past the used {used} bytes")
        yield end, bytes(data[pos + 4:pos + 4 + n]).decode("utf-8", "replace")
        pos = end + 16


# -- the worker's series ------------------------------------------------------------------

_lock = threading.Lock()
_open: dict[tuple[str, str], MetricsFile] = {}
_looked_at: dict[tuple[str, str], float] = {}
LOOK_EVERY_S = 1.0
"""How often a writer checks that its file is still in place (``MetricsFile.replaced``):
one stat a second, so a quarantined file is re-created within about a second."""
_owner_pid: list[int] = [os.getpid()]
_identity: list[WorkerIdentity] = []


def _this_worker() -> WorkerIdentity:
    if not _identity or _identity[0].pid != os.getpid():
        _identity[:] = [WorkerIdentity.current()]
    return _identity[0]


def _file(directory: Path, kind: Kind) -> MetricsFile:
    """The process's open file of ``kind`` in ``directory``; reopened after a fork."""
    if _owner_pid[0] != os.getpid():
        # A forked child must not write into its parent's files.
        _open.clear()
        _owner_pid[0] = os.getpid()
    slot = (str(directory), kind)
    found = _open.get(slot)
    now = time.monotonic()
    if found is not None and now - _looked_at.get(slot, now) >= LOOK_EVERY_S:
        _looked_at[slot] = now
        if found.replaced():
            # A new file under the same name; each SeriesWriter writes what it holds
            # into it at its next write (``SeriesWriter._sync``), so detection goes on.
            _log.warning("metrics file %s was moved away or removed (quarantined as "
                         "unreadable?); writing a new one", found.path)
            found.close()
            del _open[slot]
            found = None
    if found is None:
        # A state dir that vanished is never made afresh here (``check_present``).
        check_present(directory)
        directory.mkdir(parents=True, exist_ok=True)
        found = _open[slot] = MetricsFile(directory / file_name(kind, _this_worker()))
        _looked_at[slot] = now
    return found


class SeriesWriter:
    """Writes the samples of one label set (one tracker) into the process's files.

    Keys are encoded once here; a write is a dict lookup and an mmap store.
    """

    def __init__(self, directory: Path, labelnames: Sequence[str], labelvalues: Sequence[str],
                 counters: dict[str, str], gauges: dict[str, str]) -> None:
        self._dir = directory
        labels = dict(zip(labelnames, labelvalues, strict=True))
        self._counter_keys = {
            name: encode_key(name, name + "_total", labels, doc) for name, doc in counters.items()
        }
        self._gauge_keys = {
            name: encode_key(name, name, labels, doc) for name, doc in gauges.items()
        }
        self._counters: dict[str, float] = {name: 0.0 for name in counters}
        self._gauges: dict[str, float] = {}
        """Every gauge's last value: written again into a file made afresh."""
        with _lock:
            counter_file = _file(directory, "counter")
            for name, key in self._counter_keys.items():
                self._counters[name] = counter_file.read_value(key)
        self._held: dict[Kind, MetricsFile] = {"counter": counter_file}

    def _sync(self, kind: Kind, stamp: float) -> MetricsFile:
        """The process's file of ``kind``; when it is not the one this writer wrote last
        (made afresh after the old one was quarantined), everything this writer holds
        is written into it first: counters are totals, so nothing is counted twice."""
        f = _file(self._dir, kind)
        held = self._held.get(kind)
        if held is not f:
            if held is not None:
                if kind == "counter":
                    for name, total in self._counters.items():
                        f.write_value(self._counter_keys[name], total, 0.0)
                else:
                    for name, value in self._gauges.items():
                        f.write_value(self._gauge_keys[name], value, stamp)
            self._held[kind] = f
        return f

    def record(self, amounts: dict[str, float], values: dict[str, float]) -> None:
        """Add ``amounts`` to counters and set gauges ``values``, under one lock."""
        stamp = time.time()
        with _lock:
            counter_file = self._sync("counter", stamp)
            for name, amount in amounts.items():
                self._counters[name] += amount
                counter_file.write_value(self._counter_keys[name], self._counters[name], 0.0)
            self._set(values, stamp)

    def set_many(self, values: dict[str, float]) -> None:
        # Gauges are merged across processes by this timestamp (``merge``), so it
        # must be wall-clock time even when the tracker's own clock is injected.
        stamp = time.time()
        with _lock:
            self._set(values, stamp)

    def _set(self, values: dict[str, float], stamp: float) -> None:
        gauge_file = self._sync("gauge", stamp)
        for name, value in values.items():
            gauge_file.write_value(self._gauge_keys[name], value, stamp)
            self._gauges[name] = value
