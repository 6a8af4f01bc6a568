"""Rungs verified by evidence: did the restart actually un-crawl the shard?

After a restart rung has taken effect and the shard's new worker has run its
warm-up and then as many batches as a baseline takes, the sidecar records, in
the shard's ladder history, an entry of kind ``verified``:

- the new worker's shared GPU memory (``SharedSource``: PDH on Windows,
  ``file:`` with the simulated GPU): a fresh context holds about 0 B;
- the median rate of those baseline-count batches against the shard's own
  baseline (from ``batches.jsonl``, which the tracker writes per batch).

``outcome`` is ``verified`` when the rate is back (>= ``RATE_BACK_RATIO``)
and the shared memory is back to about 0 (<= ``SHARED_CLEAR_BYTES``, or not
measured on a platform that does not count it), else ``not_verified``. The
``reason`` is the line people read ("restart verified: shared 0 B, rate 98 %
of baseline"). The entry is a record, never a decision: it changes no
counter, no rung and no episode, so a fresh context that spills again is
still the shard's second crawl and takes the next rung, as the ladder says.

Only the restart rung (``kernel.rungs.RESTART``) is verified: it keeps the
shard on its GPU, so the shared memory and the GPU baseline say whether it
worked.

Why the sidecar: it owns the ladder history, runs on every rig whatever
starts the workers (``up``, systemd, a Scheduled Task), and already reads
the state dir. It writes through the engine's ``LadderStore``, under its
lock and durably, like every other decision of the sidecar.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from crawlguard.gpu.shared import SharedSource
from crawlguard.kernel import rungs
from crawlguard.kernel.errors import CrawlguardError, SharedMemoryError
from crawlguard.kernel.formats import batchlog
from crawlguard.kernel.formats.batchlog import Batch
from crawlguard.kernel.logs import Outage, Outages, get_logger
from crawlguard.kernel.settings import Detection
from crawlguard.kernel.workers import WorkerIdentity, read_registration
from crawlguard.sidecar import ladder

from .ladder import Entry, ShardLadder
from .state import LadderStore

log = get_logger(__name__)

MIB = 1 << 20
SHARED_CLEAR_BYTES = 64 * MIB
"""At or below this the new context's shared GPU memory counts as back to 0.
A fresh context holds none; a spilled one holds hundreds of MiB or more, and
the driver's own bookkeeping never comes near 64 MiB."""
RATE_BACK_RATIO = 0.8
"""Median rate / baseline at or above which the rate is back: batch jitter
stays well within 20 %, while a spilled context runs at a fifth or less."""
STEP_SECONDS = 1.0
"""How often the sidecar looks for restarts to verify. Cheap: a read of each
ladder, and batches.jsonl is read only for a shard whose last restart awaits
its verdict."""


@dataclass(frozen=True)
class Verification:
    rung_id: str
    worker: WorkerIdentity
    shared_bytes: int | None
    rate_ratio: float | None
    batches: int
    verified: bool

    @property
    def summary(self) -> str:
        word = "verified" if self.verified else "NOT verified"
        shared = "not measured" if self.shared_bytes is None else human_bytes(self.shared_bytes)
        rate = ("no baseline" if self.rate_ratio is None
                else f"{self.rate_ratio * 100:.0f} % of baseline")
        return f"restart {word}: shared {shared}, rate {rate}"

    def entry(self, now: float) -> Entry:
        return Entry(kind="verified", at=now, id=self.rung_id, rung=rungs.RESTART.name,
                     worker=self.worker, outcome="verified" if self.verified else "not_verified",
                     reason=self.summary, shared_bytes=self.shared_bytes,
                     rate_ratio=self.rate_ratio)


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover (the loop always returns)


def due_rung(state: ShardLadder) -> Entry | None:
    """The shard's last rung when it is a restart carried out and not yet verified.

    Only the last one: an earlier restart's worker has been replaced since, so
    there is nothing left to measure about it.
    """
    taken = [e for e in state.history if e.kind == "rung"]
    if not taken:
        return None
    last = taken[-1]
    if last.rung != rungs.RESTART.name or last.outcome is None or last.effective_at is None:
        return None
    if any(e.kind == "verified" and e.id == last.id for e in state.history):
        return None
    return last


def assess(rung: Entry, worker: WorkerIdentity, batches: Iterable[Batch],
           shared_bytes: int | None, detection: Detection) -> Verification | None:
    """The verdict on ``rung`` once ``worker`` (the new one) has run enough batches;
    None while it has not, or while the registered worker is still the old one."""
    if rung.worker is not None and worker.same_as(rung.worker):
        return None
    # Batches since the decision, of the new pid. Not compared with the process's
    # creation time: psutil derives it from the boot time, which can be off from
    # the wall clock by a good part of a second.
    since = rung.decided_at if rung.decided_at is not None else rung.at
    rows = [b for b in batches if b.pid == worker.pid and b.t >= since]
    need = detection.warmup_batches + detection.baseline_batches
    if len(rows) < need:
        return None
    window = rows[detection.warmup_batches:need]
    rate = statistics.median(b.rate for b in window)
    baseline = next((b.baseline for b in reversed(window) if b.baseline), None)
    ratio = None if baseline is None else rate / baseline
    shared_ok = shared_bytes is None or shared_bytes <= SHARED_CLEAR_BYTES
    rate_ok = ratio is not None and ratio >= RATE_BACK_RATIO
    return Verification(rung_id=rung.id or "?", worker=worker, shared_bytes=shared_bytes,
                        rate_ratio=ratio, batches=len(window), verified=shared_ok and rate_ok)


class Verifier:
    """Looks for restarts to verify and records the verdicts (one thread in the sidecar)."""

    def __init__(self, store: LadderStore, detection: Detection, shared: SharedSource | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.state = store.dir
        self.detection = detection
        self.shared = shared
        self.clock = clock
        self._shared_outage = Outage(log, "shared-memory source")
        # A step runs every second: an unreadable ladder is logged once, not each time.
        self._unreadable = Outages(log, "shard %s: restart verification")
        self._unrecorded = Outages(log, "shard %s: recording a restart's verification")

    def step(self) -> list[tuple[str, Entry]]:
        """One look at every shard; returns the entries recorded."""
        waiting: list[tuple[str, Entry, WorkerIdentity, list[Batch]]] = []
        for shard in self.store.shards():
            try:
                due = self._due(shard)
            except CrawlguardError as exc:
                self._unreadable.failed(shard, "waits until the shard's files can be read "
                                        "(logged once): %s", exc)
                continue
            self._unreadable.recovered(shard)
            if due is not None:
                waiting.append(due)
        if not waiting:
            return []
        readings = self._shared({w for _, _, w, _ in waiting})
        done: list[tuple[str, Entry]] = []
        for shard, rung, worker, rows in waiting:
            verdict = assess(rung, worker, rows, readings.get(worker.pid), self.detection)
            if verdict is not None and self._record(shard, rung, verdict):
                done.append((shard, verdict.entry(self.clock())))
        return done

    def _due(self, shard: str) -> tuple[str, Entry, WorkerIdentity, list[Batch]] | None:
        """The shard's restart awaiting its verdict, with its new worker and batches."""
        rung = due_rung(self.store.load(shard))
        if rung is None:
            return None
        reg = read_registration(self.state, shard)
        if reg is None:
            return None
        since = rung.decided_at if rung.decided_at is not None else rung.at
        rows = [b for b in batchlog.read(self.state.batches_file(shard))[0] if b.t >= since]
        return shard, rung, reg.identity, rows

    def _shared(self, workers: set[WorkerIdentity]) -> dict[int, int]:
        if self.shared is None:
            return {}
        try:
            got = self.shared.read({w.pid for w in workers})
        except SharedMemoryError as exc:
            self._shared_outage.failed("failed; restarts are verified on the rate alone "
                                       "until it recovers: %s", exc)
            return {}
        self._shared_outage.recovered()
        return got

    def _record(self, shard: str, rung: Entry, verdict: Verification) -> bool:
        try:
            with self.store.lock():
                state = self.store.load(shard)
                again = due_rung(state)
                if again is None or again.id != rung.id:
                    return False  # verified meanwhile, or a newer rung replaced it
                self.store.save(ladder.on_verified(state, verdict.entry(self.clock())))
        except CrawlguardError as exc:
            self._unrecorded.failed(shard, "of %s failed (logged once): %s", rung.id, exc)
            return False
        self._unrecorded.recovered(shard)
        log.info("shard %s: %s (%s)", shard, verdict.summary, rung.id)
        return True

    def run(self, stop: threading.Event, interval: float = STEP_SECONDS) -> None:
        while not stop.wait(interval):
            try:
                self.step()
            except Exception:  # the thread must outlive any one bad step
                log.exception("restart verification step failed")

    def start_thread(self, stop: threading.Event,
                     interval: float = STEP_SECONDS) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop, interval),
                                  name="crawlguard-verify", daemon=True)
        thread.start()
        return thread


def last_verification(state: ShardLadder) -> Entry | None:
    return next((e for e in reversed(state.history) if e.kind == "verified"), None)


VERIFICATION_METRICS = ("crawlguard_sidecar_restart_verified",
                        "crawlguard_sidecar_restart_verified_shared_bytes",
                        "crawlguard_sidecar_restart_verified_rate_ratio")


class VerificationCollector(Collector):
    """The last verification of each shard, for the dashboard, read from the ladders
    at each scrape so it survives a restart of the sidecar."""

    def __init__(self, store: LadderStore) -> None:
        self.store = store

    def describe(self) -> Iterable[Metric]:
        # Registering must not read the state dir: the sidecar registers this before
        # it has checked that the state dir is usable.
        return []

    def collect(self) -> Iterable[Metric]:
        ok = GaugeMetricFamily(VERIFICATION_METRICS[0],
                               "Last restart of the shard: 1 verified by evidence, 0 not",
                               labels=["shard"])
        shared = GaugeMetricFamily(VERIFICATION_METRICS[1],
                                   "Shared GPU memory of the restarted worker when verified",
                                   labels=["shard"])
        ratio = GaugeMetricFamily(VERIFICATION_METRICS[2],
                                  "Median rate / baseline of the restarted worker when verified",
                                  labels=["shard"])
        for shard in self.store.shards():
            try:
                entry = last_verification(self.store.load(shard))
            except CrawlguardError:
                continue
            if entry is None:
                continue
            ok.add_metric([shard], 1.0 if entry.outcome == "verified" else 0.0)
            if entry.shared_bytes is not None:
                shared.add_metric([shard], float(entry.shared_bytes))
            if entry.rate_ratio is not None:
                ratio.add_metric([shard], entry.rate_ratio)
        return [ok, shared, ratio]

