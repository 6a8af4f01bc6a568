"""``bfm_worker_shared_memory_bytes``: each live worker's shared GPU memory.

The readings come from a ``SharedSource`` (PDH on Windows, ``file:`` in tests
and the simulated GPU); the workers and their labels from the state dir's
metric files (``liveworkers``). Like the VRAM collector: when the source
fails, no series is served (never 0: 0 would read as "nothing spilled"),
``bfm_shared_memory_source_up`` says 0, and the failure is logged once until
the source recovers. A worker the source has no instance for is left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from crawlguard.gpu.shared import SharedSource
from crawlguard.kernel.errors import SharedMemoryError
from crawlguard.kernel.logs import Outage, get_logger

from . import catalog
from .liveworkers import live_workers

log = get_logger(__name__)


class SharedMemoryCollector(Collector):
    """Register after ``WorkerCollector``: it reads the files that one pruned."""

    def __init__(self, metrics_dir: Path, source: SharedSource) -> None:
        self.metrics_dir = Path(metrics_dir)
        self.source = source
        self._outage = Outage(log, f"shared-memory source {source.name}")

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("bfm_shared_memory_source_up",
                               catalog.EXPORTER_GAUGES["bfm_shared_memory_source_up"],
                               labels=["source"])
        workers = live_workers(self.metrics_dir) if self.metrics_dir.is_dir() else []
        try:
            readings = self.source.read({w.identity.pid for w in workers})
        except SharedMemoryError as exc:
            self._outage.failed("failed, bfm_worker_shared_memory_bytes absent until it "
                                "recovers: %s", exc)
            up.add_metric([self.source.name], 0.0)
            return [up]
        self._outage.recovered()
        up.add_metric([self.source.name], 1.0)
        name = "bfm_worker_shared_memory_bytes"
        family = GaugeMetricFamily(name, catalog.SHARED_GAUGES[name],
                                   labels=list(catalog.WORKER_LABELS))
        for worker in workers:
            value = readings.get(worker.identity.pid)
            if value is None:
                continue
            for labels in worker.labels:
                family.add_metric(list(labels), float(value))
        return [up, family]
