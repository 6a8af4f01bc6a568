"""Worker-side metric writes in prometheus_client's multiprocess file format.

The files are the library's own (``MmapedDict``, ``mmap_key``) so the exporter
reads them with the library's ``MultiProcessCollector``. crawlguard writes them
directly instead of through ``prometheus_client.Gauge`` because the library
chooses multiprocess mode from ``PROMETHEUS_MULTIPROC_DIR`` once, at import
time, for the whole process: a build that imported prometheus_client before
creating a ``CrawlTracker`` (or that serves its own metrics) would otherwise
silently write nowhere, and setting that variable would leak into the build's
children. Writing the files directly also makes a batch cost a handful of
mmap stores (see bench/bench_observe.py).

Files are named after the worker's identity key ``<pid>-<creation ms>``
rather than the bare pid, so a reused pid never continues a dead worker's
files, and gauges go to ``gauge_livemostrecent_<key>.db``, which the exporter
deletes once that worker is dead: a dead worker's gauges vanish, its counters
(``counter_<key>.db``) keep counting.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict, mmap_key

from crawlguard.kernel.workers import WorkerIdentity

GAUGE_MODE = "livemostrecent"

_lock = threading.Lock()
_open: dict[tuple[str, str], MmapedDict] = {}
_owner_pid: list[int] = [os.getpid()]
_identity: list[WorkerIdentity] = []


def _identity_key() -> str:
    if not _identity or _identity[0].pid != os.getpid():
        _identity[:] = [WorkerIdentity.current()]
    return _identity[0].key


def _file(directory: Path, typ: str) -> MmapedDict:
    """The process's open file for ``typ`` in ``directory``; reopened after a fork."""
    found = _open.get((str(directory), typ))
    if found is not None and _owner_pid[0] == os.getpid():
        return found
    if _owner_pid[0] != os.getpid():
        # A forked child must not write into its parent's files.
        _open.clear()
        _owner_pid[0] = os.getpid()
    slot = (str(directory), typ)
    found = _open.get(slot)
    if found is None:
        directory.mkdir(parents=True, exist_ok=True)
        prefix = "counter" if typ == "counter" else f"gauge_{GAUGE_MODE}"
        found = _open[slot] = MmapedDict(str(directory / f"{prefix}_{_identity_key()}.db"))
    return found


class SeriesWriter:
    """Writes the samples of one label set (one tracker) into the process's files.

    Keys are encoded once here; a write is a dict lookup and an mmap store.
    """

    def __init__(self, directory: Path, labelnames: Sequence[str], labelvalues: Sequence[str],
                 counters: dict[str, str], gauges: dict[str, str]) -> None:
        self._dir = directory
        names, values = list(labelnames), list(labelvalues)
        self._counter_keys = {
            name: mmap_key(name, name + "_total", names, values, doc)
            for name, doc in counters.items()
        }
        self._gauge_keys = {
            name: mmap_key(name, name, names, values, doc) for name, doc in gauges.items()
        }
        self._counters: dict[str, float] = {name: 0.0 for name in counters}
        with _lock:
            counter_file = _file(directory, "counter")
            for name, key in self._counter_keys.items():
                self._counters[name] = counter_file.read_value(key)[0]

    def record(self, amounts: dict[str, float], values: dict[str, float]) -> None:
        """Add ``amounts`` to counters and set gauges ``values``, under one lock."""
        stamp = time.time()
        with _lock:
            counter_file = _file(self._dir, "counter")
            for name, amount in amounts.items():
                self._counters[name] += amount
                counter_file.write_value(self._counter_keys[name], self._counters[name], 0.0)
            gauge_file = _file(self._dir, "gauge")
            for name, value in values.items():
                gauge_file.write_value(self._gauge_keys[name], value, stamp)

    def set_many(self, values: dict[str, float]) -> None:
        # mostrecent gauges are merged across processes by this timestamp, so it
        # must be wall-clock time even when the tracker's own clock is injected.
        stamp = time.time()
        with _lock:
            gauge_file = _file(self._dir, "gauge")
            for name, value in values.items():
                gauge_file.write_value(self._gauge_keys[name], value, stamp)

