"""The drill's slowdown: the worker stopped and resumed on a duty cycle, from outside.

A worker that spills crawls because each batch waits on memory traffic it cannot
avoid; a worker that is stopped most of the time crawls the same way as far as
its tracker can tell (batches take ``slowdown`` times as long). ``cycle`` holds
the worker (``kernel.processes.Target.suspend``: SIGSTOP to its process group,
or NtSuspendProcess on Windows) for ``1 - 1/slowdown`` of every period and lets it
run for the rest. The period is a quarter of the worker's own batch time (within
``PERIOD_MIN_S`` .. ``PERIOD_MAX_S``, and long enough that the run slice stays
``MIN_RUN_S``), so that every batch spans several periods and is slowed by the same
factor: a period longer than a batch would let some batches run through at full
speed, and the EMA of a mix of fast and very slow batches stays above the crawl line.

Stopping the process slows what the process does, not what its GPU does: a batch
that the host queues in a few milliseconds and then waits for runs on the GPU
through the stops. Such a worker is slowed far less than ``slowdown``, so the drill
steers (``steer``): after each batch run wholly under the current duty it compares
the batch's rate with the target and, when the batch was too fast, raises the
slowdown in proportion (the host's share of the batch is then stretched enough),
up to ``MAX_SLOWDOWN``. Never down: the streak needs consecutive slow batches.

Why not a cgroup CPU quota (cpu.max) on Linux: it would need a cgroup the user
may write (systemd delegates none for cpu by default; cgroup v1 hosts have
none), and moving the worker into it is a change that outlives the drill: a
drill that is killed could not move it back, and the worker would crawl for good.
SIGSTOP/SIGCONT needs nothing but the right to signal one's own processes, and
stops having any effect the moment the cycle stops.

The cycle runs in a child process (``python -m crawlguard.drill.slower``, started
by ``crawlguard.drill.run``) in a process group of its own, so that it always ends
with the worker running:

- the drill steers it with lines on its stdin (``period=P slowdown=S``) and ends
  it by closing that stdin; a drill that dies (Ctrl+C, an error, a SIGKILL) closes
  the pipe too, which the child sees at once (end of file);
- SIGTERM, SIGINT and SIGHUP end it the same way; it never outlives ``until``;
- whichever way it ends, it resumes the worker last (``finally``), and the drill
  resumes it too once the child has gone, in case the child itself was killed
  mid-stop. A restart rung that reaches a worker while it is stopped still works:
  the graceful signal is followed by SIGCONT (``kernel.processes``).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from crawlguard.kernel import processes
from crawlguard.kernel.errors import ProcessError
from crawlguard.kernel.stopevent import StopEvent

PERIOD_MIN_S = 0.02
"""Shorter periods cost more signals than the timing of a stop is precise."""
PERIOD_MAX_S = 1.0
"""A batch of minutes still sees a stop every second: the slowdown is smooth."""
PERIODS_PER_BATCH = 4
MIN_RUN_S = 0.002
"""The shortest run slice: below it a stopped process may not get the CPU at all."""
MAX_SLOWDOWN = 1000.0
STEER_MARGIN = 1.5
"""A batch faster than this many times the target rate raises the slowdown."""
READY = "slowing"
"""The line the child prints once the worker is pinned and the first stop is sent."""


@dataclass(frozen=True)
class Duty:
    period: float
    """Seconds of one stop + run cycle."""
    slowdown: float
    """How many times slower the worker runs: it runs ``1/slowdown`` of each period."""

    @classmethod
    def for_batches(cls, batch_seconds: float, slowdown: float) -> Duty:
        """Periods of a quarter batch, each with a run slice of at least ``MIN_RUN_S``."""
        slowdown = min(max(slowdown, 1.0), MAX_SLOWDOWN)
        period = min(max(batch_seconds / PERIODS_PER_BATCH, PERIOD_MIN_S), PERIOD_MAX_S)
        return cls(period=max(period, MIN_RUN_S * slowdown), slowdown=slowdown)

    def line(self) -> str:
        """How the drill sends it to the child (``parse``)."""
        return f"period={self.period!r} slowdown={self.slowdown!r}"

    @classmethod
    def parse(cls, line: str) -> Duty | None:
        try:
            fields = dict(part.split("=", 1) for part in line.split())
            duty = cls(period=float(fields["period"]), slowdown=float(fields["slowdown"]))
        except (KeyError, ValueError):
            return None
        ok = 0 < duty.period <= 60 and 1 <= duty.slowdown <= MAX_SLOWDOWN
        return duty if ok else None

    @property
    def run_s(self) -> float:
        return self.period / self.slowdown

    @property
    def stop_s(self) -> float:
        return self.period - self.run_s


def steer(duty: Duty, rate_ratio: float, target: float, batch_seconds: float) -> Duty | None:
    """A stronger duty when a batch slowed by ``duty`` still ran at ``rate_ratio`` of its
    baseline, more than ``STEER_MARGIN`` times the ``target`` ratio; else None."""
    if rate_ratio <= target * STEER_MARGIN or duty.slowdown >= MAX_SLOWDOWN:
        return None
    return Duty.for_batches(batch_seconds, duty.slowdown * rate_ratio / target)


class Steering:
    """The duty in force, replaced from another thread (the child's stdin reader)."""

    def __init__(self, duty: Duty) -> None:
        self.duty = duty


def cycle(target: processes.Target, duty: Duty | Steering, stop: threading.Event,
          until: float, clock: Callable[[], float] = time.time,
          started: Callable[[], None] | None = None) -> str:
    """Hold and release ``target`` on ``duty`` (read afresh every period when it is a
    ``Steering``) until ``stop`` is set or ``until`` (unix time) passes; how it ended:
    ``stopped``, ``deadline`` or ``gone`` (the target exited). The target is left
    running whatever happens."""
    steering = duty if isinstance(duty, Steering) else Steering(duty)
    try:
        first = True
        while not stop.is_set():
            duty = steering.duty
            if clock() >= until:
                return "deadline"
            if not target.suspend():
                return "gone"
            if first and started is not None:
                started()
            first = False
            if stop.wait(duty.stop_s):
                break
            if not target.resume():
                return "gone"
            if stop.wait(duty.run_s):
                break
        return "stopped"
    finally:
        with contextlib.suppress(ProcessError):
            target.resume()


def _watch_stdin(stop: StopEvent, steering: Steering) -> None:
    """New duties from the drill, line by line; its end, or its death: end of file."""
    def read() -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in sys.stdin:
                duty = Duty.parse(line)
                if duty is not None:
                    steering.duty = duty
        stop.request()

    threading.Thread(target=read, name="drill-stdin", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m crawlguard.drill.slower",
                                description="crawlguard drill's duty cycle (internal)")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--create-time", type=float, required=True)
    p.add_argument("--group", type=int, default=None)
    p.add_argument("--period", type=float, required=True)
    p.add_argument("--slowdown", type=float, required=True)
    p.add_argument("--until", type=float, required=True)
    args = p.parse_args(argv)
    stop = StopEvent()
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, lambda *_: stop.request())
    steering = Steering(Duty(period=args.period, slowdown=args.slowdown))
    _watch_stdin(stop, steering)
    with processes.Target(args.pid, group=args.group) as target:
        pinned = target.pin(args.create_time)
        if pinned != "ok":
            print(f"worker pid {args.pid}: {pinned}", flush=True)
            return 3
        ended = cycle(target, steering, stop, args.until,
                      started=lambda: print(READY, flush=True))
    print(f"ended: {ended}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
