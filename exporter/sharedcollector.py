"""``bfm_worker_shared_memory_bytes``: each live worker's shared GPU memory.

The readings come from a ``SharedSource`` (PDH on Windows, ``file:`` in tests
and the simulated GPU); the workers and their labels from the state dir's
metric files (``liveworkers``). Like the VRAM collector: when the source
fails, no series is served (never 0: 0 would read as "nothing spilled"),
``bfm_shared_memory_source_up`` says 0, and the failure is logged once until
the source recovers. A worker the source has no instance for is left out.

A fire drill (``crawlguard drill``, ``kernel.drills``) adds its worker's spill
evidence here: while the drill is live, the worker it names (pid AND creation
time) is served at least the drill's ``shared_bytes``, with or without a source
(the collector runs without one, serving nothing else, where the platform counts
no shared memory). No other worker's reading is touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from crawlguard.gpu.shared import SharedSource
from crawlguard.kernel.drills import live_drills
from crawlguard.kernel.errors import SharedMemoryError
from crawlguard.kernel.logs import Outage, get_logger
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import WorkerIdentity

from . import catalog
from .liveworkers import LiveWorker, live_workers

log = get_logger(__name__)


class SharedMemoryCollector(Collector):
    """Register after ``WorkerCollector``: it reads the files that one pruned."""

    def __init__(self, metrics_dir: Path, source: SharedSource | None,
                 drills: StateDir | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.metrics_dir = Path(metrics_dir)
        self.source = source
        self.drills = drills
        self._clock = clock
        self._outage = Outage(log, f"shared-memory source {getattr(source, 'name', 'off')}")

    def collect(self) -> Iterable[Metric]:
        workers = live_workers(self.metrics_dir) if self.metrics_dir.is_dir() else []
        drilled = self._drilled(workers)
        out: list[Metric] = []
        readings: dict[int, int] = {}
        if self.source is not None:
            up = GaugeMetricFamily("bfm_shared_memory_source_up",
                                   catalog.EXPORTER_GAUGES["bfm_shared_memory_source_up"],
                                   labels=["source"])
            out.append(up)
            try:
                readings = self.source.read({w.identity.pid for w in workers})
            except SharedMemoryError as exc:
                self._outage.failed("failed, bfm_worker_shared_memory_bytes absent until it "
                                    "recovers: %s", exc)
                up.add_metric([self.source.name], 0.0)
                if not drilled:
                    return out
            else:
                self._outage.recovered()
                up.add_metric([self.source.name], 1.0)
        elif not drilled:
            return out
        name = "bfm_worker_shared_memory_bytes"
        family = GaugeMetricFamily(name, catalog.SHARED_GAUGES[name],
                                   labels=list(catalog.WORKER_LABELS))
        for worker in workers:
            value = readings.get(worker.identity.pid)
            drill = drilled.get(worker.identity)
            if drill is not None:
                value = max(value or 0, drill)
            if value is None:
                continue
            for labels in worker.labels:
                family.add_metric(list(labels), float(value))
        return [*out, family]

    def _drilled(self, workers: list[LiveWorker]) -> dict[WorkerIdentity, int]:
        """Live workers under a live drill, with the evidence the drill reports."""
        if self.drills is None:
            return {}
        drills = live_drills(self.drills, self._clock())
        return {w.identity: d.shared_bytes for w in workers for d in drills
                if w.identity.same_as(d.target)}
