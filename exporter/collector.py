"""Custom collectors of the exporter, each with its data source passed in.

``WorkerCollector`` serves the workers' multiprocess files. Before merging, it
deletes the live-gauge files of workers that are gone (pid dead, or reused by
another process): a dead worker's crawl gauges would otherwise keep an alert
firing against its healthy successor. Counters are never lost, so totals
continue across restarts: dead workers' counter files are merged into one
archive, and an unreadable file is quarantined instead of failing the scrape
(``crawlguard.exporter.compaction``).

``VramCollector`` serves ``bfm_vram_*`` per GPU from a ``VramSource``. When the
source fails the series are absent (never zero, never "full"), the failure is
logged once until the source recovers, and ``bfm_vram_source_up`` says 0.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from crawlguard.gpu.vram import VramSource
from crawlguard.kernel.errors import ProcessError, StateError, VramError
from crawlguard.kernel.logs import Outage, get_logger
from crawlguard.kernel.statedir import check_present
from crawlguard.kernel.workers import WorkerIdentity

from . import catalog
from .compaction import MetricsJanitor
from .liveworkers import live_workers
from .mpfiles import merge, parse_name

log = get_logger(__name__)

AliveCheck = Callable[[WorkerIdentity], bool]


def default_alive(identity: WorkerIdentity) -> bool:
    try:
        return identity.is_alive()
    except ProcessError:
        # Cannot inspect (permissions): keep serving rather than hide a live worker.
        return True


class WorkerCollector(Collector):
    def __init__(self, metrics_dir: Path, alive: AliveCheck = default_alive) -> None:
        self.metrics_dir = Path(metrics_dir)
        self._alive = alive
        self.live_workers = 0
        # One look per worker per scrape: pruning and compaction ask about the same
        # workers (a psutil read each). A worker found dead stays dead: its identity
        # (pid + creation time) never comes back.
        self._this_scrape: dict[WorkerIdentity, bool] = {}
        self._dead: set[WorkerIdentity] = set()
        self.janitor = MetricsJanitor(self.metrics_dir, self._is_alive)

    def _is_alive(self, identity: WorkerIdentity) -> bool:
        if identity in self._dead:
            return False
        alive = self._this_scrape.get(identity)
        if alive is None:
            alive = self._this_scrape[identity] = self._alive(identity)
            if not alive:
                self._dead.add(identity)
        return alive

    def prune_dead(self) -> list[str]:
        """Delete live-gauge files of dead workers; returns their identity keys."""
        removed = []
        live = 0
        for path in glob.glob(str(self.metrics_dir / "gauge_*.db")):
            name = parse_name(os.path.basename(path))
            if name is None or name.kind != "gauge" or name.worker is None:
                continue  # no worker's: the merge quarantines it
            if self._is_alive(name.worker):
                live += 1
                continue
            try:
                os.remove(path)
                removed.append(name.worker.key)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove dead worker's gauges %s: %s", path, exc)
        self.live_workers = live
        return removed

    def collect(self) -> Iterable[Metric]:
        if not self.metrics_dir.is_dir():
            return []
        try:
            check_present(self.metrics_dir)  # the scrape lock would make it afresh
        except StateError:
            return []  # logged critical; BFMMetricsAbsent tells the people
        self._this_scrape.clear()
        self.prune_dead()
        with self.janitor.locked() as exclusive:
            if exclusive:
                try:
                    self.janitor.compact()
                except (StateError, OSError) as exc:
                    # Compaction only saves space and scrape time; serving must go on.
                    log.error("cannot compact dead workers' counter files in %s: %s",
                              self.metrics_dir, exc)
            # Each file read once and checked; what does not read is never merged.
            return merge(self.janitor.read_all())


class VramCollector(Collector):
    def __init__(self, source: VramSource, full_ratio: float) -> None:
        self.source = source
        self.full_ratio = full_ratio
        self._outage = Outage(log, f"VRAM source {source.name}")

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("bfm_vram_source_up", catalog.EXPORTER_GAUGES["bfm_vram_source_up"],
                               labels=["source"])
        try:
            gpus = self.source.read()
        except VramError as exc:
            self._outage.failed("failed, VRAM series absent until it recovers: %s", exc)
            up.add_metric([self.source.name], 0.0)
            return [up]
        self._outage.recovered()
        up.add_metric([self.source.name], 1.0)
        families = {name: GaugeMetricFamily(name, doc, labels=list(catalog.VRAM_LABELS))
                    for name, doc in catalog.VRAM_GAUGES.items()}
        for gpu in gpus:
            label = [str(gpu.index)]
            families["bfm_vram_used_bytes"].add_metric(label, float(gpu.used_bytes))
            families["bfm_vram_total_bytes"].add_metric(label, float(gpu.total_bytes))
            families["bfm_vram_full_ratio"].add_metric(label, self.full_ratio)
        return [up, *families.values()]


class LiveWorkersCollector(Collector):
    """``bfm_exporter_live_workers`` and ``bfm_exporter_corrupt_files_total``, read after
    ``WorkerCollector`` pruned and merged."""

    def __init__(self, workers: WorkerCollector) -> None:
        self._workers = workers

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("bfm_exporter_live_workers",
                                catalog.EXPORTER_GAUGES["bfm_exporter_live_workers"],
                                value=float(self._workers.live_workers))
        yield CounterMetricFamily("bfm_exporter_corrupt_files",
                                  catalog.EXPORTER_COUNTERS["bfm_exporter_corrupt_files"],
                                  value=float(self._workers.janitor.corrupt_total))


class WorkerInfoCollector(Collector):
    """``bfm_worker_info{shard,stage,device,gpu,pid} 1`` for each live worker.

    Read from the live-gauge files that ``WorkerCollector`` left after pruning
    (register it after that one), so a dead worker's info vanishes with its
    gauges. Should two live workers write the same series (never expected),
    only the newest is served, as the ``mostrecent`` merge of their gauges
    does: the rules join on it with ``group_left``, which needs one info
    series per worker series.
    """

    def __init__(self, metrics_dir: Path) -> None:
        self.metrics_dir = Path(metrics_dir)

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("bfm_worker_info", catalog.EXPORTER_GAUGES["bfm_worker_info"],
                                 labels=[*catalog.WORKER_LABELS, "pid"])
        newest: dict[tuple[str, ...], WorkerIdentity] = {}
        for worker in live_workers(self.metrics_dir):
            for series in worker.labels:
                held = newest.get(series)
                if held is None or worker.identity.create_time > held.create_time:
                    newest[series] = worker.identity
        for labels, identity in sorted(newest.items()):
            info.add_metric([*labels, str(identity.pid)], 1.0)
        yield info
