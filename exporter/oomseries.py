"""``bfm_worker_oom_timestamp_seconds``: the OOM deaths, served from the state dir.

A worker that ran out of memory wrote ``crawlguard.kernel.oom`` records before it
died; its own gauges die with it (the ``WorkerCollector`` prunes them), so the
exporter serves the deaths from those records instead. A record is served
while

- its worker is gone (pid dead or reused): an OOM the worker survived (the
  build caught it, or it is still unwinding) is no death, and ``recovered``
  records (a later batch finished) are never served;
- it is younger than ``SERVE_S``: long enough for the alert to be evaluated,
  delivered and retried, short enough that the alert resolves by itself.

Labels: the worker's (``shard, stage, device, gpu``) plus ``pid`` and
``worker`` (its identity key ``<pid>-<creation ms>``), so each death is its own
alert and the sidecar can tell which worker it was. Value: the OOM's Unix time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from crawlguard.kernel import oom
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import WorkerIdentity

from . import catalog

SERVE_S = 900.0
"""Seconds an OOM death stays served (so BFMShardOOM fires for that long)."""
NAME = "bfm_worker_oom_timestamp_seconds"
LABELS = (*catalog.WORKER_LABELS, "pid", "worker")


class OomCollector(Collector):
    def __init__(self, state: StateDir, alive: Callable[[WorkerIdentity], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self._alive = alive
        self._clock = clock

    def deaths(self) -> list[oom.OomRecord]:
        now = self._clock()
        out = []
        for rec in oom.all_records(self.state):
            if rec.recovered or now - rec.at > SERVE_S:
                continue
            if self._alive(WorkerIdentity(rec.pid, rec.create_time)):
                continue
            out.append(rec)
        return out

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(NAME, catalog.OOM_GAUGES[NAME], labels=list(LABELS))
        for rec in self.deaths():
            family.add_metric([rec.shard, rec.stage, rec.device, rec.gpu, str(rec.pid),
                               rec.key], rec.at)
        return [family]
