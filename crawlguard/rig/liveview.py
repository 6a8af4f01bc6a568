"""Live progress of `crawlguard up`: one compact line per shard.

On a terminal the block of lines is redrawn in place twice a second; when the
output is not a terminal (a log file, CI, ``demo --json`` piping stderr) a
block is printed every ``period`` seconds instead, so logs stay readable.
Events (launches, exits, rungs decided by the sidecar) are printed as lines
of their own above the block, as they happen.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from typing import TextIO

from crawlguard.kernel.formats.batchlog import Batch, BatchTail
from crawlguard.kernel.statedir import StateDir
from crawlguard.report.summary import fmt_duration
from crawlguard.supervisor.loop import ShardRun, SupervisorEvent

from .shardview import read_ladder

UniqueGenes = Callable[[str], int]
"""Distinct genes a shard has finished, when the build can tell (the reference
build's outputs); without it the view shows genes done, redone ones included."""


def progress_text(last: Batch | None, paced_seconds: float = 0.0,
                  paced_genes: float = 0.0) -> str:
    """`` 42% done, ETA 1.1 h`` from a batch line of a tracker with ``total=``.

    The percentage is of the worker's own total (what it had left when it
    started: a relaunched worker counts the rest of the shard). The ETA is the
    genes remaining at the healthy time per gene of what this worker has embedded
    so far: ``paced_seconds`` (its batches' time at the baseline's pace, from their
    work: ``Batch.healthy_seconds``) over ``paced_genes``. It is computed from work,
    so texts longer than the baseline's stretch it and a crawl does not, which is the
    point of showing it; without work (a first-release line) it is the genes at the
    baseline's rate.
    """
    if last is None or last.total is None or last.remaining is None:
        return ""
    total, remaining = last.total, last.remaining
    done = 100.0 if total <= 0 else 100.0 * (total - remaining) / total
    text = f" {done:3.0f}% done"
    if remaining <= 0:
        return text
    if paced_genes > 0 and paced_seconds > 0:
        return f"{text}, ETA {fmt_duration(remaining * paced_seconds / paced_genes)}"
    if last.baseline:
        return f"{text}, ETA {fmt_duration(remaining / last.baseline)}"
    return f"{text}, ETA -"


class LiveView:
    def __init__(self, state: StateDir, runs: dict[str, ShardRun], stream: TextIO,
                 mode: str = "auto", period: float = 10.0, prefix: str = "up",
                 unique_genes: UniqueGenes | None = None) -> None:
        if mode == "auto":
            mode = "tty" if stream.isatty() else "lines"
        self.mode = mode
        self.state = state
        self.runs = runs
        self.stream = stream
        self.period = period
        self.prefix = prefix
        self.unique_genes = unique_genes
        self.logs = {s: BatchTail(state.batches_file(s)) for s in runs}
        self._seen_rungs = {s: len(read_ladder(state, s).rungs) for s in runs}
        self._lock = threading.Lock()
        self._drawn = 0
        self._last_block = 0.0

    # -- lines ---------------------------------------------------------------
    def shard_line(self, shard: str) -> str:
        run, log = self.runs[shard], self.logs[shard]
        log.poll()
        ladder = read_ladder(self.state, shard)
        last = log.last
        device = (last.device if last else "") or run.device or "-"
        speed = "" if last is None else f" {last.rate:7.1f} genes/s"
        if last is not None and last.ema is not None and last.baseline:
            speed += f" ({100 * last.ema / last.baseline:4.0f}% of baseline)"
        speed += progress_text(last, log.paced_seconds, log.paced_genes)
        rungs = ",".join(ladder.rung_names) or "-"
        # Distinct genes when the build can tell (as the demo's summary counts them);
        # otherwise the batch log's sum, which counts work redone after a restart again.
        genes = (f"{self.unique_genes(shard):>7} genes" if self.unique_genes is not None
                 else f"{int(log.genes):>7} genes done")
        return (f"{shard:<20.20} {run.state:<8} {device:<7} {genes}"
                f"{speed}  crawls {ladder.crawls} rungs {rungs} launches {run.launches}")

    def _block(self) -> list[str]:
        return [self.shard_line(s) for s in self.runs]

    # -- output --------------------------------------------------------------
    def event(self, event: SupervisorEvent) -> None:
        # A worker that ended may have been ended by a rung: tell that first.
        self._check_rungs()
        where = "" if event.shard == "*" else f"[{event.shard}] "
        self.say(f"{where}{event.message}")

    def say(self, text: str) -> None:
        if self.mode == "off":
            return
        with self._lock:
            self._erase()
            self.stream.write(f"crawlguard {self.prefix}: {text}\n")
            self._redraw()

    def _erase(self) -> None:
        if self.mode == "tty" and self._drawn:
            # Up to the block's first line, then clear to the end of the screen.
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _redraw(self) -> None:
        if self.mode == "tty":
            # A wrapped line would take two rows and break the redraw's count.
            width = max(20, shutil.get_terminal_size().columns - 1)
            lines = [f"  {line}"[:width] for line in self._block()]
            self.stream.write("".join(f"{line}\n" for line in lines))
            self._drawn = len(lines)
        self.stream.flush()

    def _check_rungs(self) -> None:
        for shard in self.runs:
            ladder = read_ladder(self.state, shard)
            for entry in ladder.rungs[self._seen_rungs[shard]:]:
                self.say(f"[{shard}] sidecar: crawl #{ladder.crawls} -> rung "
                         f"{entry.get('rung')} ({entry.get('reason') or entry.get('source')})")
            self._seen_rungs[shard] = max(self._seen_rungs[shard], len(ladder.rungs))

    def tick(self, force: bool = False) -> None:
        if self.mode == "off":
            return
        self._check_rungs()
        with self._lock:
            if self.mode == "tty":
                self._erase()
                self._redraw()
            elif force or time.monotonic() - self._last_block >= self.period:
                self._last_block = time.monotonic()
                self.stream.write("".join(f"crawlguard {self.prefix}:   {line}\n"
                                          for line in self._block()))
                self.stream.flush()

    def run(self, stop: threading.Event) -> None:
        self._last_block = time.monotonic()
        while not stop.wait(0.5):
            self.tick()
        self.tick(force=True)

    def close(self) -> None:
        """Leave the last block on screen (a terminal) and stop drawing."""
        with self._lock:
            self._drawn = 0
