"""A fire drill on a running rig: ``crawlguard drill SHARD``.

The drill makes the shard's live worker crawl for real, from outside, and watches
the rig's own parts recognise it and act:

1. it finds the shard's running worker (``worker.json``, alive by pid AND creation
   time) and the rig's sidecar (``crawlguard.kernel.discovery``: a running ``up`` on
   the state dir, or the knobs); it refuses (``DrillRefused``, exit 2) a shard with no
   running worker, a worker on the CPU (the ladder's end: no spill evidence there),
   a sidecar that cannot be reached, is paused or only alerts, a rung in progress, or
   another drill of the shard;
2. it waits until the worker has a baseline (slowing it earlier would make the slow
   rate its baseline, and the shard's persisted one);
3. it writes ``drills/<shard>.json`` (``kernel.drills``): from then on the exporter
   serves spill evidence for that worker alone, and the sidecar judges its alerts as
   the drill's (restarted for real, not counted) unless ``--keep``;
4. it slows the worker: ``drill.slower``'s duty cycle in a child process, twice the
   worker's crawl factor slower, in periods of a quarter of its batch time;
5. it reads the shard's ladder until the ladder has acted: the rung decided (then the
   slowdown ends and the drill file goes), the relaunch, and the sidecar's verdict on
   the restart; or until the timeout, or an answer that takes no rung;
6. it always ends the slowdown and removes its file (``finally``; a killed drill's
   child ends the slowdown itself, and a killed drill's file marks nothing).

What it prints is read from the state dir (``drill.timeline``).
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from crawlguard.exporter import mpfiles
from crawlguard.kernel import drills, processes, rungs
from crawlguard.kernel.discovery import RigEnv, rig_env
from crawlguard.kernel.errors import CrawlguardError, DrillRefused, ProcessError
from crawlguard.kernel.formats import batchlog, ladderfile
from crawlguard.kernel.formats.batchlog import Batch
from crawlguard.kernel.formats.ladderfile import HistoryEntry
from crawlguard.kernel.formats.schema import WorkerJson
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.settings import OFF, Detection, Endpoints
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import (
    LaunchRecord,
    Registration,
    WorkerIdentity,
    leading_launch,
    posix_group,
    read_launch,
    read_registration,
)
from crawlguard.sidecar.client import SidecarClient

from . import slower, timeline

DEFAULT_TIMEOUT_S = 900.0
"""Enough for a worker of 4 s batches: about 10 slowed batches (7 minutes) before the
alert, then the restart and its verification. Longer batches need a longer --timeout."""
POLL_S = 0.25
READY_TIMEOUT_S = 15.0
"""For the slowdown's child to start (an interpreter, crawlguard's imports)."""
END_TIMEOUT_S = 5.0
SLOWDOWN_PER_FACTOR = 2.0
"""The worker runs ``1 / (2 x factor)`` of the time: its rate falls to half the crawl
line (baseline / factor), well clear of batch-to-batch jitter."""
EVIDENCE_PER_MIN = 2
"""Shared GPU memory reported: twice the worker's HELIX_BFM_SHARED_MIN_BYTES."""
RESTART_FAILED = ("identity_mismatch", "no_worker", "refused", "error")

Say = Callable[[str], None]


@dataclass(frozen=True)
class DrillConfig:
    shard: str
    timeout: float = DEFAULT_TIMEOUT_S
    keep: bool = False
    env: Mapping[str, str] | None = None
    """The environment (None: the process's); the rig is found through it."""


def run_drill(config: DrillConfig, stop: threading.Event, say: Say,
              clock: Callable[[], float] = time.time) -> timeline.Report:
    """The drill; ``DrillRefused`` when it cannot start. Always leaves the worker running
    at full speed and the drill file gone."""
    rig = rig_env(config.env)
    state = StateDir(rig.state_dir.resolve())
    shard = ShardName.parse(config.shard)
    deadline = clock() + config.timeout
    worker = running_worker(state, shard)
    check_sidecar(rig, shard)
    check_episode(state, shard, worker)
    if drills.live_drill(state, shard, clock()) is not None:
        raise DrillRefused(f"another drill of shard {shard} is under way "
                           f"({drills.drill_path(state, shard)})")
    say(f"shard {shard}: worker pid {worker.pid}; state dir {state.root}; alert path "
        f"{rig.alert_path}")
    worker, rows = wait_for_baseline(state, shard, worker, deadline, stop, say, clock)
    if rows is None:
        return _not_acted(config, rig, worker, clock(), "interrupted" if stop.is_set() else
                          "the worker had no baseline before the timeout (a worker is slowed "
                          "only once it has one)")
    gauges = worker_gauges(state, worker)
    window = int(gauges.get("bfm_crawl_window_batches") or Detection.from_env(rig.env).window)
    shared_min = gauges.get("bfm_shared_min_bytes") or Detection.from_env(rig.env).shared_min_bytes
    batch_s = statistics.median(b.seconds for b in rows[-5:])
    duty = slower.Duty.for_batches(batch_s, SLOWDOWN_PER_FACTOR * rows[-1].factor)
    drill = drills.DrillFile(
        id=f"d{secrets.token_hex(3)}", shard=shard, worker=WorkerJson.of(worker),
        drill=WorkerJson.of(WorkerIdentity.current()), started_at=clock(), until=deadline,
        keep=config.keep, shared_bytes=min(int(EVIDENCE_PER_MIN * shared_min), 2**53))
    drills.write_drill(state, drill)
    try:
        with Slowdown(state, shard, worker, duty, deadline) as slowing:
            onset = slowing.start()
            say(f"drill {drill.id}: worker pid {worker.pid} slowed {duty.slowdown:g}x (runs "
                f"{duty.run_s * 1000:.0f} ms of every {duty.period * 1000:.0f} ms); "
                f"{_gib(drill.shared_bytes)} shared GPU memory reported for it alone")
            steer = Steer(slowing, 1 / duty.slowdown, batch_s, onset, say)
            return _watch(config, rig, state, shard, worker, drill, onset, window, slowing,
                          steer, deadline, stop, say, clock)
    finally:
        drills.remove_drill(state, shard, drill.id)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _not_acted(config: DrillConfig, rig: RigEnv, worker: WorkerIdentity, onset: float,
               why: str) -> timeline.Report:
    return timeline.Report(shard=config.shard, alert_path=rig.alert_path, worker=worker,
                           onset=onset, seen=timeline.Seen(), detected=None, relaunch=None,
                           keep=config.keep, why=why)


def running_worker(state: StateDir, shard: str) -> WorkerIdentity:
    """The shard's registered worker, when it runs; ``DrillRefused`` otherwise."""
    try:
        reg = read_registration(state, shard)
    except CrawlguardError as exc:
        raise DrillRefused(f"shard {shard}: {exc}") from exc
    try:
        alive = reg is not None and reg.identity.is_alive()
    except ProcessError as exc:
        raise DrillRefused(f"shard {shard}: {exc}") from exc
    if reg is None or not alive:
        raise DrillRefused(f"no running worker for shard {shard} in state dir {state.root} "
                           "(start the rig first: crawlguard up, or crawlguard run)")
    return reg.identity


def check_sidecar(rig: RigEnv, shard: str) -> None:
    """The sidecar answers, takes rungs, and has none in progress for ``shard``."""
    try:
        with SidecarClient.from_endpoints(Endpoints.from_env(rig.env)) as client:
            view = client.shards()
    except CrawlguardError as exc:
        raise DrillRefused(f"the ladder cannot act without the sidecar: {exc}") from exc
    if view.get("action") == OFF:
        raise DrillRefused("the sidecar runs with HELIX_BFM_CRAWL_ACTION=off: it only alerts, "
                           "so the drill could not see it act")
    if view.get("paused"):
        raise DrillRefused("the sidecar is paused: 'crawlguard resume' first")
    for ladder in view.get("shards", []):
        pending = ladder.get("pending") if isinstance(ladder, dict) else None
        if ladder.get("shard") == shard and pending:
            raise DrillRefused(f"shard {shard}: rung {pending.get('id')} is in progress")


def check_episode(state: StateDir, shard: str, worker: WorkerIdentity) -> None:
    """The worker has no crawl episode open already: its alerts would all be that
    episode's (recorded while the sidecar was paused or alerting only), and take no rung."""
    try:
        doc = ladderfile.read(state.ladder_file(shard))
    except CrawlguardError as exc:
        raise DrillRefused(f"shard {shard}: {exc}") from exc
    if doc is not None and doc.episode is not None and doc.episode.worker == worker.key:
        raise DrillRefused(
            f"shard {shard}: worker pid {worker.pid} already has a crawl episode open (its "
            f"{doc.episode.alertname}, taken while the sidecar was paused or only alerting): "
            f"its alerts take no further rung; 'crawlguard rung {shard} next' acts on it")


class WorkerRows:
    """One worker's lines of the shard's batches.jsonl, read as they are appended."""

    def __init__(self, state: StateDir, shard: str, worker: WorkerIdentity) -> None:
        self.worker = worker
        self._tail = batchlog.BatchTail(state.batches_file(shard),
                                        keep=lambda b: b.pid == worker.pid)

    def rows(self) -> list[Batch]:
        self._tail.poll()
        return self._tail.kept


def wait_for_baseline(state: StateDir, shard: str, worker: WorkerIdentity, deadline: float,
                      stop: threading.Event, say: Say, clock: Callable[[], float]
                      ) -> tuple[WorkerIdentity, list[Batch] | None]:
    """The shard's running worker and its batches once it has a baseline; None for the
    batches when the deadline came first. Follows a worker relaunched meanwhile;
    ``DrillRefused`` when none runs any more, or it runs on the CPU."""
    told = False
    batches = WorkerRows(state, shard, worker)
    while True:
        if not batches.worker.same_as(worker):
            batches = WorkerRows(state, shard, worker)  # relaunched meanwhile: follow it
        # Past its warm-up (an EMA) with a baseline: what the drill's slowdown is judged by.
        rows = [b for b in batches.rows() if b.baseline is not None and b.ema is not None]
        if rows:
            if not rows[-1].gpu:
                raise DrillRefused(
                    f"shard {shard}: worker pid {worker.pid} runs on {rows[-1].device}: a CPU "
                    "worker has no spill evidence, and on CPU the ladder takes no rung")
            return worker, rows
        if clock() >= deadline or stop.is_set():
            return worker, None
        if not told:
            say(f"waiting for worker pid {worker.pid} to establish its baseline")
            told = True
        stop.wait(POLL_S)
        worker = running_worker(state, shard)


def worker_gauges(state: StateDir, worker: WorkerIdentity) -> dict[str, float]:
    """The knobs the worker publishes (its window, its shared-memory threshold), read from
    its metrics file: they are the worker's, whatever this shell's environment says."""
    path = state.metrics_dir / mpfiles.file_name("gauge", worker)
    try:
        entries = mpfiles.read(path, "gauge")
    except (OSError, mpfiles.BadMetricsFile):
        return {}
    return {e.sample: e.value for e in entries}


def _history(state: StateDir, shard: str) -> list[HistoryEntry]:
    try:
        doc = ladderfile.read(state.ladder_file(shard))
    except CrawlguardError:
        return []  # being replaced, or damaged: the next look may read it
    return [] if doc is None else list(doc.history)


def _relaunch(state: StateDir, shard: str, worker: WorkerIdentity) -> Registration | None:
    try:
        reg = read_registration(state, shard)
    except CrawlguardError:
        return None
    return reg if reg is not None and not reg.identity.same_as(worker) else None


class Steer:
    """Raises the slowdown while the worker's batches stay too fast (``slower.steer``):
    each batch that ran wholly under the duty in force is judged once."""

    def __init__(self, slowing: Slowdown, target: float, batch_s: float, onset: float,
                 say: Say) -> None:
        self.slowing = slowing
        self.target = target
        self.batch_s = batch_s
        self.since = onset
        self.say = say
        self._judged = 0

    def look(self, rows: list[Batch], now: float) -> None:
        fresh = rows[self._judged:]
        self._judged = len(rows)
        for row in fresh:
            if row.baseline is None or row.t - row.seconds < self.since:
                continue  # began under an earlier duty (or before the drill)
            duty = slower.steer(self.slowing.duty, row.rate / row.baseline, self.target,
                                self.batch_s)
            if duty is not None:
                self.say(f"a slowed batch still ran at {row.rate / row.baseline:.0%} of the "
                         "baseline (work that stops do not slow, such as the GPU's): slowing "
                         f"{duty.slowdown:.0f}x")
                self.slowing.adjust(duty)
                self.since = now
                return


def _watch(config: DrillConfig, rig: RigEnv, state: StateDir, shard: str,
           worker: WorkerIdentity, drill: drills.DrillFile, onset: float, window: int,
           slowing: Slowdown, steer: Steer, deadline: float, stop: threading.Event,
           say: Say, clock: Callable[[], float]) -> timeline.Report:
    seen = timeline.Seen()
    why = ""
    told: set[str] = set()
    batches = WorkerRows(state, shard, worker)
    while True:
        seen = timeline.seen(_history(state, shard), worker, onset)
        if seen.rung is None and slowing.running:
            steer.look([b for b in batches.rows() if b.t > onset], clock())
        if seen.alert is not None and "alert" not in told:
            told.add("alert")
            say(f"alert {seen.alert.alertname} judged: {seen.alert.reason or seen.alert.kind}")
        if seen.rung is not None:
            if slowing.running:
                slowing.end()
                drills.remove_drill(state, shard, drill.id)
                say(f"rung {seen.rung.rung} {seen.rung.id} decided: slowdown ended; "
                    "waiting for the relaunch and the restart's verification")
            if seen.verified is not None or seen.rung.outcome in RESTART_FAILED:
                break
            if (seen.rung.rung != rungs.RESTART.name and seen.rung.outcome is not None
                    and _relaunch(state, shard, worker) is not None):
                break  # only a restart is verified (the CPU rung of a --keep drill)
        elif seen.not_taken is not None:
            why = seen.not_taken
            break
        elif not slowing.running:
            why = f"the slowdown ended before the ladder acted ({slowing.ended})"
            break
        elif not _alive(worker):
            why = "the worker exited before the ladder acted (its shard done, or a crash)"
            break
        if stop.is_set():
            why = why or "interrupted"
            break
        if clock() >= deadline:
            why = f"no rung within the timeout ({config.timeout:g}s)"
            break
        stop.wait(POLL_S)
    return timeline.Report(
        shard=shard, alert_path=rig.alert_path, worker=worker, onset=onset, seen=seen,
        detected=timeline.detection(batches.rows(), worker, onset, window, seen.alert),
        relaunch=_relaunch(state, shard, worker) if seen.rung is not None else None,
        keep=config.keep, why="" if seen.acted else why)


def _alive(worker: WorkerIdentity) -> bool:
    try:
        return worker.is_alive()
    except ProcessError:
        return True  # cannot tell: the ladder will say


class Slowdown:
    """``drill.slower`` in a child process of its own group; ``end()`` (or leaving the
    ``with``) stops it and resumes the worker, whatever state the child is in."""

    def __init__(self, state: StateDir, shard: str, worker: WorkerIdentity,
                 duty: slower.Duty, until: float) -> None:
        self.worker = worker
        self.duty = duty
        """The duty in force (``adjust`` replaces it)."""
        self.until = until
        self.group = None if sys.platform == "win32" else posix_group(
            worker, leading_launch(_launch(state, shard), worker))
        self.child: subprocess.Popen[str] | None = None
        self.ended = ""
        self._lines: queue.Queue[str | None] = queue.Queue()

    def __enter__(self) -> Slowdown:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    @property
    def running(self) -> bool:
        if self.child is None or self.child.poll() is not None:
            if self.child is not None and not self.ended:
                self.ended = f"its process ended with code {self.child.returncode}"
                self._resume()
            return False
        return True

    def start(self) -> float:
        """Start slowing; the onset (unix time of the first stop). ``DrillRefused`` when
        the worker cannot be slowed (gone, or not ours to signal)."""
        argv = [sys.executable, "-m", "crawlguard.drill.slower", "--pid", str(self.worker.pid),
                "--create-time", repr(self.worker.create_time),
                "--period", repr(self.duty.period), "--slowdown", repr(self.duty.slowdown),
                "--until", repr(self.until)]
        if self.group is not None:
            argv += ["--group", str(self.group)]
        # A group of its own: Ctrl+C and a kill of the drill's group leave it to end the
        # slowdown itself (its stdin closes).
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True
        try:
            self.child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, **kwargs)
        except OSError as exc:
            raise DrillRefused(f"cannot start the slowdown: {exc.strerror or exc}") from exc
        assert self.child.stdout is not None
        threading.Thread(target=self._read, args=(self.child.stdout,), daemon=True,
                         name="drill-slower-output").start()
        got: list[str] = []
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if line == slower.READY:
                return time.time()
            got.append(line)
        self.end()
        raise DrillRefused(f"worker pid {self.worker.pid} could not be slowed: "
                           f"{' '.join(got) or 'the slowdown did not start'}")

    def adjust(self, duty: slower.Duty) -> None:
        """Send the child a new duty (a line on its stdin)."""
        child = self.child
        if child is None or child.stdin is None or child.poll() is not None:
            return
        try:
            child.stdin.write(duty.line() + "\n")
            child.stdin.flush()
        except (OSError, ValueError):
            return  # it is ending: ``running`` says so
        self.duty = duty

    def _read(self, stream: IO[str]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                self._lines.put(line.strip())
        self._lines.put(None)

    def end(self) -> None:
        """Stop slowing: close the child's stdin (its signal to resume the worker and exit),
        wait for it, kill it if it hangs; then resume the worker from here too."""
        child = self.child
        if child is None:
            return
        if child.poll() is None:
            with contextlib.suppress(OSError):
                assert child.stdin is not None
                child.stdin.close()
            try:
                child.wait(END_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(END_TIMEOUT_S)
            self.ended = self.ended or "ended by the drill"
        self._resume()

    def _resume(self) -> None:
        """The worker running again, even if the child died between a stop and a resume."""
        with contextlib.suppress(CrawlguardError), \
                processes.Target(self.worker.pid, group=self.group) as target:
            if target.pin(self.worker.create_time) == "ok":
                target.resume()


def _launch(state: StateDir, shard: str) -> LaunchRecord | None:
    try:
        return read_launch(state, shard)
    except CrawlguardError:
        return None

