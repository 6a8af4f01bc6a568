"""Live progress of `crawlguard up`: one compact line per shard.

On a terminal the block of lines is redrawn in place twice a second; when the
output is not a terminal (a log file, CI, ``demo --json`` piping stderr) a
block is printed every ``period`` seconds instead, so logs stay readable, each
line starting with the local time. Events (launches, exits, rungs decided by
the sidecar, a drill's restart) are printed as lines of their own above the
block, as they happen.

A row tells the shard's truth: genes done across all its launches of the
shard's total (what its first worker was told), the EMA and its share of the
baseline (the same two numbers), the ETA at the healthy pace or, while the EMA
is below the crawl threshold, at the crawl's pace, marked ``CRAWLING``. Rows
fit 80 columns (``shard_row``): columns are shortened, then dropped; the crawl
and rung state never is.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from crawlguard.kernel.formats.batchlog import Batch, BatchTail
from crawlguard.kernel.statedir import StateDir
from crawlguard.report.summary import fmt_duration
from crawlguard.supervisor.loop import ShardRun, SupervisorEvent

from .shardview import LadderView, is_drill, read_ladder

UniqueGenes = Callable[[str], int]
"""Distinct genes a shard has finished, when the build can tell (the reference
build's outputs); without it the view counts what the workers' trackers report."""

WIDTH = 80
"""Rows fit this many columns whatever the terminal says (and lines mode always)."""
NAME_WIDTH = 18


def eta_seconds(last: Batch | None, paced_seconds: float = 0.0,
                paced_genes: float = 0.0) -> float | None:
    """Seconds to the shard's end at its healthy pace, from a batch line with ``remaining``.

    The genes remaining (the rest of the shard: a relaunched worker is told only the
    rest) at the healthy time per gene of what this worker has embedded so far:
    ``paced_seconds`` (its batches' time at the baseline's pace, from their work:
    ``Batch.healthy_seconds``) over ``paced_genes``. Computed from work, texts longer
    than the baseline's stretch it; without work (a first-release line) it is the
    genes at the baseline's rate. None: unknown.
    """
    if last is None or last.remaining is None:
        return None
    if last.remaining <= 0:
        return 0.0
    if paced_genes > 0 and paced_seconds > 0:
        return last.remaining * paced_seconds / paced_genes
    if last.baseline:
        return last.remaining / last.baseline
    return None


@dataclass(frozen=True)
class ShardFacts:
    """What one row shows, read from the shard's files and its supervisor."""

    shard: str
    state: str
    device: str
    done: float
    """Genes of the shard done across all its launches (distinct when known)."""
    total: int | None
    """The shard's genes (``BatchTail.shard_total``); None when the build gives none."""
    logged: float
    """Genes in the batch log: redone work counted again."""
    pace: float | None
    """The EMA (genes/s at the baseline's shape), else the last batch's genes/s."""
    baseline: float | None
    crawling: bool
    """The EMA is below the crawl threshold (a slow streak): the signature under way."""
    eta: float | None
    """Seconds to the end at the current pace: the crawl's while crawling."""
    crawls: int
    rungs: tuple[str, ...]
    drills: int
    launches: int


def shard_facts(run: ShardRun, tail: BatchTail, ladder: LadderView,
                unique: int | None = None) -> ShardFacts:
    last = tail.last
    total = tail.shard_total
    if unique is not None:
        done = float(unique)
    elif total is not None and last is not None and last.remaining is not None:
        done = max(total - last.remaining, 0.0)
    else:
        done = tail.genes
    pace = baseline = None
    crawling = False
    if last is not None:
        baseline = last.baseline
        pace = last.ema if last.ema is not None and baseline else last.rate
        crawling = last.streak > 0 and run.state == "running"
    eta = eta_seconds(last, tail.paced_seconds, tail.paced_genes)
    if eta and crawling and pace and baseline:
        # The healthy time per gene, stretched by how far the pace has fallen.
        eta *= baseline / pace
    if run.state != "running" and eta:
        eta = None  # nobody works on it: no end to forecast
    return ShardFacts(
        shard=run.shard, state=run.state,
        device=(last.device if last else "") or run.device or "-", done=done, total=total,
        logged=tail.genes, pace=pace, baseline=baseline, crawling=crawling, eta=eta,
        crawls=ladder.crawls, rungs=tuple(ladder.rung_names), drills=ladder.drills,
        launches=run.launches)


def _columns(f: ShardFacts) -> dict[str, tuple[str, str]]:
    """Each column's long and short text; "" is no column. In row order."""
    cols: dict[str, tuple[str, str]] = {}
    cols["state"] = (f"{f.state:<8}", STATE_SHORT.get(f.state, f.state))
    cols["device"] = (f"{f.device:<7}", f.device)
    if f.total:
        pct = f"{min(100.0, 100.0 * f.done / f.total):3.0f}%"
        cols["progress"] = (f"{f.done:>6.0f}/{f.total} genes {pct}",
                            f"{f.done:.0f}/{f.total} {pct.strip()}")
    else:
        cols["progress"] = (f"{f.done:>6.0f} genes", f"{f.done:.0f}g")
    redone = f.logged - f.done
    cols["redone"] = (f"(+{redone:.0f} redone)", "") if redone >= 1 else ("", "")
    if f.pace is not None and f.baseline:
        share = f"{100.0 * f.pace / f.baseline:.0f}%"
        cols["speed"] = (f"{f.pace:.1f} genes/s ({share} of baseline)", f"{f.pace:.1f}/s {share}")
    elif f.pace is not None:
        cols["speed"] = (f"{f.pace:.1f} genes/s", f"{f.pace:.1f}/s")
    if f.eta is not None and f.eta > 0:
        eta = fmt_duration(f.eta)
        cols["eta"] = ((f"ETA {eta} at the crawl's pace", f"crawl ETA {eta}") if f.crawling
                       else (f"ETA {eta}", f"ETA {eta}"))
    rungs = ",".join(f.rungs) or "-"
    drills = f" drills {f.drills}" if f.drills else ""
    crawl = "CRAWLING " if f.crawling else ""
    cols["ladder"] = (f"{crawl}crawls {f.crawls} rungs {rungs}{drills}",
                      f"{crawl}c{f.crawls} {rungs}" + (f" d{f.drills}" if f.drills else ""))
    cols["launches"] = (f"launches {f.launches}", f"l{f.launches}")
    return cols


STATE_SHORT = {"running": "run", "pending": "pend", "stopped": "stop", "failed": "fail",
               "oom-wait": "oomw", "gpu-wait": "gpuw"}
REDUCTIONS = (("redone", "drop"), ("launches", "drop"), ("speed", "short"),
              ("eta", "short"), ("device", "drop"), ("name", "short"), ("name", "cut"),
              ("progress", "short"),
              ("ladder", "short"), ("state", "short"), ("speed", "drop"), ("eta", "drop"),
              ("progress", "drop"))
"""How a row is made to fit, in order: the crawl and rung state (``ladder``) and the
run's state are shortened, never dropped; a name is cut to ``NAME_WIDTH``, and
further only when nothing else is left to drop."""


def shard_row(f: ShardFacts, width: int = WIDTH) -> str:
    """One shard's row in at most ``width`` columns."""
    cols = {k: v for k, v in _columns(f).items() if v[0]}
    chosen = {k: v[0] for k, v in cols.items()}
    name = f"{f.shard:<{NAME_WIDTH}}"

    def row() -> str:
        return " ".join([name, *(text for text in chosen.values() if text)])

    for key, how in REDUCTIONS:
        if len(row()) <= width:
            break
        if key == "name":
            name = f.shard if how == "short" or len(f.shard) <= NAME_WIDTH else (
                f.shard[:NAME_WIDTH - 1] + "~")
        elif key in chosen:
            chosen[key] = cols[key][1] if how == "short" else ""
    over = len(row()) - width
    if over > 0:
        room = max(len(name) - over, 4)
        name = (f.shard if len(f.shard) <= room else f.shard[:room - 1] + "~").ljust(room)
    return row()[:width]


class LiveView:
    def __init__(self, state: StateDir, runs: dict[str, ShardRun], stream: TextIO,
                 mode: str = "auto", period: float = 10.0, prefix: str = "up",
                 unique_genes: UniqueGenes | None = None,
                 clock: Callable[[], float] = time.time, stamp: str = "%H:%M:%S") -> None:
        if mode == "auto":
            mode = "tty" if stream.isatty() else "lines"
        self.mode = mode
        self.state = state
        self.runs = runs
        self.stream = stream
        self.period = period
        self.prefix = prefix
        self.unique_genes = unique_genes
        self.clock = clock
        self.stamp = stamp
        """strftime format of the local time that starts every line in lines mode."""
        self.logs = {s: BatchTail(state.batches_file(s)) for s in runs}
        self._seen_rungs = {s: len(read_ladder(state, s).rungs) for s in runs}
        self._lock = threading.Lock()
        self._drawn = 0
        self._last_block = 0.0

    # -- lines ---------------------------------------------------------------
    def facts(self, shard: str) -> ShardFacts:
        log = self.logs[shard]
        log.poll()
        unique = self.unique_genes(shard) if self.unique_genes is not None else None
        return shard_facts(self.runs[shard], log, read_ladder(self.state, shard), unique)

    def shard_line(self, shard: str, width: int = WIDTH) -> str:
        return shard_row(self.facts(shard), width)

    def _lead(self) -> str:
        """What starts a line: in lines mode the time, then who speaks."""
        who = f"crawlguard {self.prefix}:"
        return f"{who} " if self.mode == "tty" else f"{self._stamp()} {who} "

    def _stamp(self) -> str:
        return time.strftime(self.stamp, time.localtime(self.clock()))

    def _block(self, width: int) -> list[str]:
        return [self.shard_line(s, width) for s in self.runs]

    # -- output --------------------------------------------------------------
    def event(self, event: SupervisorEvent) -> None:
        # A worker that ended may have been ended by a rung: tell that first.
        self._check_rungs()
        where = "" if event.shard == "*" else f"[{event.shard}] "
        self.say(f"{where}{event.message}")

    def say(self, text: str, always: bool = False) -> None:
        """An event line above the block; ``always``: even with ``--progress off`` (what
        an operator needs to reach the run: its URL, its token file, how to resume)."""
        if self.mode == "off":
            if always:
                with self._lock:
                    self.stream.write(f"crawlguard {self.prefix}: {text}\n")
                    self.stream.flush()
            return
        with self._lock:
            self._erase()
            self.stream.write(f"{self._lead()}{text}\n")
            self._redraw()

    def _erase(self) -> None:
        if self.mode == "tty" and self._drawn:
            # Up to the block's first line, then clear to the end of the screen.
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _redraw(self) -> None:
        if self.mode == "tty":
            # A wrapped line would take two rows and break the redraw's count.
            width = min(WIDTH, shutil.get_terminal_size().columns) - 1
            lines = [f"  {line}"[:width] for line in self._block(max(20, width - 2))]
            self.stream.write("".join(f"{line}\n" for line in lines))
            self._drawn = len(lines)
        self.stream.flush()

    def _check_rungs(self) -> None:
        for shard in self.runs:
            ladder = read_ladder(self.state, shard)
            for entry in ladder.rungs[self._seen_rungs[shard]:]:
                why = entry.get("reason") or entry.get("source")
                if is_drill(entry):  # a rehearsal: the ladder did not move
                    self.say(f"[{shard}] sidecar: drill -> {entry.get('rung')} of the worker, "
                             f"no rung taken ({why})")
                else:
                    self.say(f"[{shard}] sidecar: crawl #{ladder.crawls} -> rung "
                             f"{entry.get('rung')} ({why})")
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
                # The time alone leads a row, so that it keeps 69 of the 80 columns.
                lead = f"{self._stamp()}   "
                self.stream.write("".join(f"{lead}{line}\n"
                                          for line in self._block(WIDTH - len(lead))))
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
