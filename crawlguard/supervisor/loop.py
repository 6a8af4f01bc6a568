"""The supervisor loop of ``crawlguard run`` (and of ``up``).

Runs CMD once per shard, in order. Each launch:

1. builds the environment: the supervisor's own, ``HELIX_BFM_SHARD``, an
   absolute ``HELIX_BFM_STATE_DIR``, the small-rig CPU policy (``launchenv``),
   and last the shard's resume overrides, re-read from the state dir before
   every launch (the sidecar rewrites them at a rung, e.g. BGEM3_DEVICE=cpu);
2. replaces ``{shard}`` in every argument (no shell is involved) and starts
   the worker as the leader of its own process group (``childproc``);
3. waits for it, sampling its GPU's VRAM;
4. exit 0 ends the shard. Any other end (a rung's SIGTERM, a crash, a signal
   death) is a relaunch, after the dead worker's GPU memory was released
   (``gpuwait``, bounded by HELIX_BFM_GPU_RELEASE_TIMEOUT); after an OOM
   death, also after the sidecar took its alert (``oomwait``, bounded by
   HELIX_BFM_OOM_WAIT_SECONDS), so a CPU rung reaches the relaunch;
5. progress is the genes the shard's tracker logged (``progress``). After
   HELIX_BFM_MAX_FUTILE_RESTARTS relaunches in a row that each ended without
   a single new gene, the supervisor gives up: exit status 3.

A stop request (SIGINT/SIGTERM to the supervisor; ``stop`` set) forwards the
graceful signal to the worker, gives it HELIX_BFM_GRACE_SECONDS for salvage,
hard-kills it after that, and returns 130.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from crawlguard.gpu.vram import VramSource
from crawlguard.kernel import processes
from crawlguard.kernel.devices import gpu_of_launch
from crawlguard.kernel.errors import CrawlguardError, ProcessError, StateGoneError, UnsafeNameError
from crawlguard.kernel.formats.batchlog import BatchTail
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.settings import Remediation
from crawlguard.kernel.statedir import StateDir, check_present
from crawlguard.kernel.workers import LaunchRecord, WorkerIdentity, record_launch

from . import childproc, logtail
from .gpuwait import GpuRelease
from .launchenv import launch_env, small_rig_policy
from .oomwait import death_record, wait_for_verdict
from .runrecord import RunRecord
from .vramlog import VramLog

EXIT_OK = 0
EXIT_FUTILE = 3
"""A shard restarted max_futile_restarts times in a row without progress."""
EXIT_STATE_GONE = 4
"""The state dir vanished or was replaced mid-run: the workers were stopped, and
nothing may restart the run (a new start would make an empty one and forget every
ladder: systemd's RestartPreventExitStatus=4, crawlguard.ps1's loop)."""
EXIT_STOPPED = 130
"""The supervisor was asked to stop (SIGINT/SIGTERM) before the shards were done."""


@dataclass(frozen=True)
class SupervisorConfig:
    shards: tuple[str, ...]
    command: tuple[str, ...]
    state_dir: Path
    remediation: Remediation = field(default_factory=Remediation)
    log_dir: Path | None = None
    """Worker output goes to <log_dir>/<shard>.log; None: inherited."""
    poll_interval: float = 0.1
    cwd: Path | None = None
    vram_log_interval: float = 5.0
    """Seconds between VRAM samples in <state>/vram.jsonl (for the report); 0: none."""

    def __post_init__(self) -> None:
        # Parsed once here, at the command line's boundary; the type travels inward.
        object.__setattr__(self, "shards", tuple(ShardName.parse(s) for s in self.shards))
        folded: dict[str, str] = {}
        for shard in self.shards:
            # NTFS ignores case: two such shards would share one directory and ladder.
            if folded.setdefault(shard.casefold(), shard) != shard:
                raise UnsafeNameError("shard", shard, f"differs from {folded[shard.casefold()]!r} "
                                      "only in case; on Windows both would share one directory")
        if not self.command:
            raise ValueError("no command to run")


@dataclass
class ShardRun:
    """What the supervisor knows about one shard; read by live displays."""

    shard: str
    state: str = "pending"
    """pending, running, oom-wait, gpu-wait, done, failed, stopped."""
    launches: int = 0
    pid: int | None = None
    device: str = ""
    last_exit: str = ""
    futile: int = 0
    started: float | None = None
    ended: float | None = None
    unsalvaged_told: bool = False
    """Whether the "no handler, nothing salvaged" line was shown (once per shard)."""


@dataclass(frozen=True)
class SupervisorEvent:
    shard: str
    kind: str
    """launch, exit, no-salvage, log-tail, oom, gpu-wait, done, gave-up, stopping, policy,
    state-gone."""
    message: str


EventSink = Callable[[SupervisorEvent], None]


class Supervisor:
    def __init__(self, config: SupervisorConfig, source: VramSource | None = None,
                 on_event: EventSink | None = None,
                 base_env: Mapping[str, str] | None = None,
                 record: RunRecord | None = None) -> None:
        self.config = config
        self.record = record
        self.state = StateDir(config.state_dir)
        self.source = source
        self.on_event = on_event or (lambda e: None)
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.runs = {s: ShardRun(s) for s in config.shards}
        self.vram_log = VramLog(self.state, source, config.vram_log_interval)
        self.policy_env: dict[str, str] = {}
        self._gone_said = threading.Event()

    def _emit(self, shard: str, kind: str, message: str) -> None:
        self.on_event(SupervisorEvent(shard, kind, message))

    def state_gone(self, shard: str, exc: StateGoneError) -> None:
        """Say, once, that the state dir vanished and the run stops with exit 4: seen at a
        worker's poll here, or by ``up``'s monitor between polls, whichever is first."""
        if self._gone_said.is_set():
            return
        self._gone_said.set()
        self._emit(shard, "state-gone", f"CRITICAL: {exc}; stopping this run "
                   f"(exit {EXIT_STATE_GONE})")

    def run(self, stop: threading.Event) -> int:
        self.policy_env, note = small_rig_policy(self.config.remediation, self.source,
                                                 self.base_env)
        if note:
            self._emit("*", "policy", note)
        for shard in self.config.shards:
            try:
                rc = self._run_shard(shard, stop)
            except StateGoneError as exc:  # logged critical where it was seen
                self.runs[shard].state = "stopped"
                self.state_gone(shard, exc)
                return EXIT_STATE_GONE
            if rc != EXIT_OK:
                return rc
        return EXIT_OK

    def _run_shard(self, shard: str, stop: threading.Event) -> int:
        run = self.runs[shard]
        run.started = time.time()
        log = BatchTail(self.state.batches_file(shard))
        log.poll()
        rem = self.config.remediation
        while True:
            if stop.is_set():
                run.state = "stopped"
                return EXIT_STOPPED
            env = launch_env(self.base_env, self.state, shard, self.policy_env)
            argv = [arg.replace("{shard}", shard) for arg in self.config.command]
            gpu = gpu_of_launch(env, rem.device_var)
            watch = GpuRelease(self.source, gpu) if self.source and gpu is not None else None
            if watch:
                watch.at_launch()
            genes_before = log.genes
            launched_at = time.time()
            run.device = env.get(rem.device_var, "")
            run.launches += 1
            log_path = (self.config.log_dir / f"{shard}.log") if self.config.log_dir else None
            log_from = logtail.size_of(log_path) if log_path else 0
            with self._output(shard) as out:
                # The launch is recorded before the worker runs (Windows: still suspended),
                # so a rung can never find a registered worker without its launch.
                popen = childproc.spawn(argv, env, cwd=self.config.cwd, stdout=out, stderr=out,
                                        created=functools.partial(self._record_launch, shard))
            run.pid, run.state = popen.pid, "running"
            self._emit(shard, "launch", f"launch #{run.launches}: pid {popen.pid}"
                       + (f", {rem.device_var}={run.device}" if run.device else ""))
            try:
                rc = self._wait(popen, watch, stop)
            finally:
                childproc.release(popen)
                if self.record is not None:
                    self.record.discard(popen.pid)
            log.poll()
            progress = log.genes - genes_before
            if rc is None:
                run.state = "stopped"
                return EXIT_STOPPED
            run.last_exit = childproc.describe_exit(rc)
            lost = processes.unsalvaged(rc)
            if lost and not run.unsalvaged_told:
                run.unsalvaged_told = True
                self._emit(shard, "no-salvage", f"worker pid {popen.pid}: {lost}")
            if rc == 0:
                run.state, run.ended = "done", time.time()
                self._emit(shard, "done", f"shard complete ({run.launches} launch"
                           f"{'es' if run.launches > 1 else ''})")
                return EXIT_OK
            if run.launches > 1:
                run.futile = 0 if progress > 0 else run.futile + 1
            gave_up = run.futile >= rem.max_futile_restarts
            self._emit(shard, "exit", f"worker pid {popen.pid} ended with {run.last_exit} "
                       f"after {progress:g} new genes" + ("" if gave_up else "; relaunching"))
            if progress == 0 and log_path is not None:
                # Died before any batch (at import, most often): show why, here.
                lines = logtail.tail(log_path, log_from)
                if lines:
                    self._emit(shard, "log-tail", f"last lines of {log_path}:\n"
                               + "\n".join(f"    {line}" for line in lines))
            if gave_up:
                run.state, run.ended = "failed", time.time()
                self._emit(shard, "gave-up", (
                    f"giving up: relaunched {run.futile} times in a row and each worker "
                    f"ended without a single new gene (last: {run.last_exit}; "
                    f"HELIX_BFM_MAX_FUTILE_RESTARTS={rem.max_futile_restarts}). Fix the "
                    "cause and run again: finished work is kept."))
                return EXIT_FUTILE
            self._oom_wait(shard, popen.pid, launched_at, stop)
            if watch:
                run.state = "gpu-wait"
                result = watch.wait(rem.gpu_release_timeout, stop)
                if not result.released or result.waited >= 0.05:
                    self._emit(shard, "gpu-wait", ("GPU memory released: " if result.released
                                                   else "GPU release: ") + result.detail)

    def _record_launch(self, shard: str, popen: subprocess.Popen[bytes]) -> None:
        """Tell the sidecar which process leads the worker's group (the worker may be
        its child), and the run record what to stop if this supervisor dies hard."""
        try:
            ident = WorkerIdentity.of_pid(popen.pid)
            record_launch(self.state, shard, LaunchRecord(
                pid=ident.pid, create_time=ident.create_time, job=childproc.job_of(popen)))
        except (ProcessError, CrawlguardError) as exc:
            self._emit(shard, "launch", f"launch of pid {popen.pid} not recorded: {exc}")
        if self.record is not None:
            self.record.add(f"worker {shard}", popen.pid)
    def _oom_wait(self, shard: str, pid: int, launched_at: float,
                  stop: threading.Event) -> None:
        """After an OOM death, hold the relaunch until the sidecar took its alert."""
        timeout = self.config.remediation.oom_wait_seconds
        record = death_record(self.state, shard, pid, launched_at - 1.0)
        if record is None or timeout <= 0:
            return
        run = self.runs[shard]
        run.state = "oom-wait"
        taken, waited = wait_for_verdict(self.state, shard, record, timeout, stop)
        self._emit(shard, "oom", f"worker pid {pid} died of GPU out-of-memory; " + (
            f"the sidecar took its alert after {waited:.1f}s" if taken else
            f"no verdict from the sidecar within {waited:.0f}s (HELIX_BFM_OOM_WAIT_SECONDS)"))

    def _wait(self, popen: subprocess.Popen[bytes], watch: GpuRelease | None,
              stop: threading.Event) -> int | None:
        """The worker's return code; None when a stop request ended it."""
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                return popen.wait(timeout=self.config.poll_interval)
            if stop.is_set():
                self._stop_worker(popen)
                return None
            try:
                # A stat a poll: `run` has no monitor thread, and a worker that runs
                # on into a vanished state dir is a crawl no one would see.
                check_present(self.state.root)
            except StateGoneError:
                self._stop_worker(popen)
                raise
            if watch:
                watch.sample()
            self.vram_log.tick()

    def _stop_worker(self, popen: subprocess.Popen[bytes]) -> None:
        shard = next((r.shard for r in self.runs.values() if r.pid == popen.pid), "*")
        grace = self.config.remediation.grace_seconds
        self._emit(shard, "stopping", f"stopping worker pid {popen.pid} "
                   f"(graceful signal, up to {grace:g}s for salvage)")
        rc = childproc.stop_gracefully(popen, grace)
        self._emit(shard, "exit", f"worker pid {popen.pid} ended with "
                   f"{childproc.describe_exit(rc)}")

    @contextlib.contextmanager
    def _output(self, shard: str) -> Iterator[IO[bytes] | None]:
        if self.config.log_dir is None:
            yield None
            return
        check_present(self.config.log_dir)
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        fh: IO[bytes]
        with open(self.config.log_dir / f"{shard}.log", "ab") as fh:
            yield fh
