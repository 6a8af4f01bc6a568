"""Carrying out decided rungs: one thread per rung, its outcome recorded.

A rung reaches ``RungRunner`` only after the write that records it as
``pending`` has returned, and so is durable (``LadderStore.save`` fsyncs).
``start`` is called under ``LadderStore.lock()`` right after that write; the
rung's thread acts on the worker (``crawlguard.sidecar.actions.restart_worker``:
verify, signal, wait, kill) and writes the outcome, a read-modify-write under
``LadderStore.lock()`` like every decision. A rung with no worker to act on (a
manual rung of a shard whose worker is not registered) completes at once as
``no_worker``. A rung is serialised per shard by construction: no new rung is
decided while one is pending.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from crawlguard.kernel.errors import CrawlguardError
from crawlguard.kernel.formats.schema import worker_json
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import LaunchRecord, read_launch, read_registration
from crawlguard.sidecar import ladder

from .actions import ActionResult, restart_worker
from .audit import AuditLog
from .ladder import Pending
from .metrics import SidecarMetrics
from .state import LadderStore

log = get_logger(__name__)


class RungRunner:
    def __init__(self, state_dir: StateDir, store: LadderStore, metrics: SidecarMetrics,
                 audit: AuditLog, grace_seconds: float,
                 clock: Callable[[], float] = time.time,
                 after_decide: Callable[[str, Pending], None] | None = None) -> None:
        self.dir = state_dir
        self.store = store
        self.metrics = metrics
        self.audit = audit
        self.grace_seconds = grace_seconds
        self.clock = clock
        self.after_decide = after_decide
        self._threads: dict[str, threading.Thread] = {}

    def in_progress(self) -> int:
        return sum(1 for t in list(self._threads.values()) if t.is_alive())

    def start(self, shard: str, start: Pending) -> None:
        """After the rung's write (never before): carry it out on a thread of its own."""
        self.audit.write("rung_decided", shard=shard, id=start.id, rung=start.rung,
                         source=start.source, reason=start.reason,
                         worker=worker_json(start.worker))
        if self.after_decide is not None:
            self.after_decide(shard, start)
        self.spawn(shard, start)

    def spawn(self, shard: str, pending: Pending) -> None:
        thread = threading.Thread(target=self._act, args=(shard, pending),
                                  name=f"rung-{shard}-{pending.id}", daemon=True)
        self._threads[shard] = thread
        thread.start()

    def _act(self, shard: str, pending: Pending) -> None:
        if pending.worker is None:
            result = ActionResult("no_worker", pending.decided_at,
                                  "no worker registered for the shard")
        else:
            try:
                result = restart_worker(pending.worker, self.grace_seconds, self.clock,
                                        self._launch(shard))
            except Exception as exc:
                # Recorded rather than left pending, which would block the shard's ladder.
                log.exception("shard %s: rung %s failed", shard, pending.id)
                result = ActionResult("error", self.clock(), f"{type(exc).__name__}: {exc}")
        if result.outcome == "already_gone":
            result = self._when_gone(shard, pending, result)
        self._complete(shard, pending, result)

    def _launch(self, shard: str) -> LaunchRecord | None:
        """The process the supervisor launched for the shard (it leads the group)."""
        try:
            return read_launch(self.dir, shard)
        except CrawlguardError as exc:
            log.warning("shard %s: launch record unreadable (%s); worker signalled alone",
                        shard, exc)
            return None

    def _when_gone(self, shard: str, pending: Pending, result: ActionResult) -> ActionResult:
        """The worker died before we looked (e.g. during a sidecar crash): its successor's
        creation time bounds when it was gone, so that successor's alerts stay live."""
        try:
            reg = read_registration(self.dir, shard)
        except CrawlguardError:
            return result
        if reg is None or (pending.worker is not None
                           and pending.worker.same_as(reg.identity)):
            return result
        bound = max(pending.decided_at, min(reg.create_time, result.effective_at))
        if bound >= result.effective_at:
            return result
        return ActionResult(result.outcome, bound,
                            result.detail + "; gone before its successor started")

    def _complete(self, shard: str, pending: Pending, result: ActionResult) -> None:
        try:
            with self.store.lock():
                state = self.store.load(shard)
                t = ladder.on_complete(state, pending.id, result.outcome, result.effective_at)
                self.store.save(t.state)
                self.metrics.shard_state(shard, t.state.rung, t.state.pending is not None)
        except CrawlguardError as exc:
            log.error("shard %s: outcome of rung %s not recorded: %s", shard, pending.id, exc)
            return
        self.record_done(shard, pending, result)

    def record_done(self, shard: str, pending: Pending, result: ActionResult) -> None:
        self.metrics.rungs.labels(shard=shard, rung=pending.rung, outcome=result.outcome).inc()
        self.audit.write("rung_done", shard=shard, id=pending.id, rung=pending.rung,
                         outcome=result.outcome, effective_at=result.effective_at,
                         decided_at=pending.decided_at, detail=result.detail,
                         worker=worker_json(pending.worker))
        log.info("shard %s: rung %s %s -> %s (%s)", shard, pending.id, pending.rung,
                 result.outcome, result.detail)
