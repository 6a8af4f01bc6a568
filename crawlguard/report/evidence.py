"""The evidence of one rebuild, read from its state dir (``crawlguard report``).

Reads only; never writes state and never talks to the sidecar, so it runs
after a rebuild, during one (files are being appended to) and on a copy of a
state dir taken from another machine. Inputs:

- ``shards/<shard>/batches.jsonl``: one line per finished batch (the tracker;
  ``crawlguard.kernel.formats.batchlog``);
- ``shards/<shard>/ladder.json``: crawls, rung, env overrides, history (the sidecar;
  ``crawlguard.kernel.formats.ladderfile``);
- ``audit.jsonl``: the sidecar's decisions (``crawlguard.kernel.formats.auditlog``),
  used for rung markers of a shard whose ladder has no usable history;
- ``vram.jsonl`` (optional): the supervisor's VRAM samples (``crawlguard.kernel.formats.vramlog``).

Each file is read with its format's one reader; this module only combines them.

Lines of a JSON-lines file that do not parse (a line being written right now,
a crash mid-write, an edit) are skipped and counted, and a ladder.json that
breaks its schema is reported as unreadable, never a traceback: the report is
most wanted exactly when something went wrong.

``summary`` turns it into Markdown; the charts live in ``chart`` because they
need matplotlib (the optional ``report`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from crawlguard.kernel import oom, rungs
from crawlguard.kernel.errors import CorruptStateError, CrawlguardError, ReportError
from crawlguard.kernel.formats import auditlog, batchlog, ladderfile, vramlog
from crawlguard.kernel.formats.auditlog import AuditLine
from crawlguard.kernel.formats.batchlog import Batch
from crawlguard.kernel.formats.ladderfile import HistoryEntry, LadderFile
from crawlguard.kernel.formats.vramlog import VramSample
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import read_registration

__all__ = ["ALERT_KINDS", "MARKERS", "RESET", "AlertEvent", "Onset", "RunEvidence", "RungEvent",
           "ShardEvidence", "audit_marker", "ladder_marker", "load_run", "vram_for"]

RESET = "reset"
MARKERS = (*rungs.TAKEN_NAMES, RESET)
"""What the report marks: the rungs taken and the resets that undid them."""
ALERT_KINDS = ("crawl", "drill")
"""Ladder history kinds of an alert that opened a crawl episode (a drill's is one too)."""


@dataclass(frozen=True)
class RungEvent:
    t: float
    rung: str
    outcome: str
    reason: str
    source: str  # "ladder" or "audit"
    drill: bool = False
    """A drill's restart (``crawlguard drill``): the ladder did not move."""


@dataclass(frozen=True)
class AlertEvent:
    t: float
    """When the alert began firing (its startsAt; else when the sidecar judged it)."""
    alertname: str


@dataclass(frozen=True)
class Onset:
    """Where the slowdown that a rung answered began."""

    t: float
    stalled: bool
    """True: the batch after ``t`` never finished (a stall, cut by the rung at
    ``until``); False: ``t`` is the start of the first batch of the slow streak."""
    until: float
    """The rung that ended it."""


@dataclass
class ShardEvidence:
    shard: str
    batches: list[Batch] = field(default_factory=list)
    ladder: LadderFile | None = None
    ladder_error: str | None = None
    rungs: list[RungEvent] = field(default_factory=list)
    skipped_lines: int = 0
    ooms: list[oom.OomRecord] = field(default_factory=list)
    """Out-of-memory records of the shard's workers (``crawlguard.kernel.oom``), oldest first."""
    live_pid: int | None = None
    """The shard's registered worker when it is alive now (a report during a rebuild)."""

    @property
    def oom_deaths(self) -> int:
        """OOM records whose worker did not survive (no later batch finished)."""
        return sum(1 for r in self.ooms if not r.recovered)

    @property
    def genes(self) -> float:
        return sum(b.genes for b in self.batches)

    @property
    def unique_genes(self) -> float | None:
        """Distinct genes done, when the build's tracker knows its total: the shard's total
        (what its first worker was told) less what the last worker had left. None: unknown
        (the batch log alone counts the work redone after a restart again)."""
        told = [b for b in self.batches if b.total is not None and b.remaining is not None]
        if not told:
            return None
        total = max(b.total for b in told if b.total is not None)
        return min(max(total - (told[-1].remaining or 0.0), 0.0), self.genes)

    @property
    def alerts(self) -> list[AlertEvent]:
        """Alerts that opened a crawl episode (ladder history), oldest first."""
        history = self.ladder.history if self.ladder is not None else []
        return sorted((AlertEvent(e.starts_at if e.starts_at is not None else e.at,
                                  e.alertname or "alert")
                       for e in history if e.kind in ALERT_KINDS), key=lambda a: a.t)

    def _cut(self) -> list[tuple[RungEvent, Batch]]:
        """Each rung that stopped a worker, with the last batch that finished before it."""
        out = []
        for rung in self.rungs:
            if rung.rung not in rungs.TAKEN_NAMES:
                continue
            before = [b for b in self.batches if b.t <= rung.t]
            if before:
                out.append((rung, before[-1]))
        return out

    @property
    def onsets(self) -> list[Onset]:
        """Per rung that stopped a worker: where its slowdown began. The first batch of the
        slow streak the last finished batch was in; with no streak, the end of that batch
        (the next one stalled: it never finished)."""
        out = []
        for rung, last in self._cut():
            if last.streak > 0:
                worker = [b for b in self.batches if b.pid == last.pid and b.t <= last.t]
                first = last
                for b in reversed(worker):
                    if b.streak <= 0:
                        break
                    first = b
                out.append(Onset(first.t - first.seconds, False, rung.t))
            else:
                out.append(Onset(last.t, True, rung.t))
        return out

    def stalls(self, now: float | None = None) -> list[tuple[float, float]]:
        """Batches that ran longer than factor x one batch at the baseline's pace and
        finished no line: (their start, their end). A stalled batch is in no line, so
        its end is the rung that cut it, or ``now`` while the shard's live worker
        (``live_pid``) is still in it."""
        out = []
        for rung, last in self._cut():
            expected = last.expected_seconds
            if expected is not None and rung.t - last.t > last.factor * expected:
                out.append((last.t, rung.t))
        final = self.batches[-1] if self.batches else None
        if now is not None and final is not None and final.pid == self.live_pid and not any(
                r.t >= final.t for r in self.rungs):
            expected = final.expected_seconds
            if expected is not None and now - final.t > final.factor * expected:
                out.append((final.t, now))
        return out

    @property
    def crawls(self) -> int:
        return self.ladder.crawls if self.ladder is not None else 0

    @property
    def rung(self) -> str:
        return self.ladder.rung if self.ladder is not None else rungs.NONE.name

    @property
    def env(self) -> dict[str, str]:
        return dict(self.ladder.env) if self.ladder is not None else {}

    @property
    def verifications(self) -> list[HistoryEntry]:
        """History entries of kind ``verified`` (sidecar/verify.py), oldest first."""
        history = self.ladder.history if self.ladder is not None else []
        return [e for e in history if e.kind == "verified"]

    @property
    def final_device(self) -> str:
        return self.batches[-1].device if self.batches else "-"

    @property
    def lost_seconds(self) -> float:
        return sum(b.lost_seconds for b in self.batches) + self.unfinished_lost_seconds

    @property
    def unfinished_lost_seconds(self) -> float:
        """What the batches cut short by a rung cost: a stalled batch never finishes, so
        it is in no line of batches.jsonl. Per restart/cpu rung: the time since the last
        finished batch, beyond one such batch at its baseline pace."""
        lost = 0.0
        for rung, last in self._cut():
            expected = last.expected_seconds
            if expected is not None:
                lost += max(rung.t - last.t - expected, 0.0)
        return lost

    @property
    def slow_batches(self) -> int:
        return sum(1 for b in self.batches if b.slow)

    def baselines(self) -> dict[tuple[str, str], float]:
        """The last established baseline of every (stage, device), in first-seen order."""
        out: dict[tuple[str, str], float] = {}
        for b in self.batches:
            if b.baseline is not None:
                out[(b.stage, b.device)] = b.baseline
        return out

    def gpus(self) -> set[str]:
        return {b.gpu for b in self.batches if b.gpu}

    def span(self) -> tuple[float, float] | None:
        if not self.batches:
            return None
        first = self.batches[0]
        return first.t - first.seconds, self.batches[-1].t


@dataclass
class RunEvidence:
    state_dir: Path
    shards: list[ShardEvidence]
    vram: list[VramSample]
    skipped: dict[str, int]
    """Unreadable lines per file (relative path), for the summary."""


# -- reading -------------------------------------------------------------------

def ladder_marker(entry: HistoryEntry) -> RungEvent | None:
    """A rung taken, or a reset, from a ladder history entry (``kind`` "rung" or "reset";
    other kinds, such as a crawl counted or a refused alert, took no rung)."""
    marker = _marker(entry.kind == RESET, entry.kind == "rung", entry.at, entry.rung,
                     entry.outcome, entry.reason, "ladder")
    if marker is not None and entry.source == "drill":
        return replace(marker, drill=True)
    return marker


def audit_marker(line: AuditLine) -> RungEvent | None:
    """The same from an audit line (``event`` "rung_done" or "reset"; a rung decided is
    logged again with its outcome, and an alert line took no rung by itself)."""
    return _marker(line.event == RESET, line.event == "rung_done", line.at, line.rung,
                   line.outcome, line.reason, "audit")


def _marker(reset: bool, taken: bool, at: float, rung: str | None, outcome: str | None,
            reason: str | None, source: str) -> RungEvent | None:
    name = RESET if reset else rung if taken else None
    if name is None or name not in MARKERS:
        return None
    return RungEvent(t=at, rung=name, outcome=outcome or "", reason=reason or "",
                     source=source)


def load_run(state_dir: str | Path, shards: list[str] | None = None) -> RunEvidence:
    """Everything the report shows, from one state dir."""
    state = StateDir(state_dir)
    if not state.root.is_dir():
        raise ReportError(f"state dir {state.root} does not exist "
                          "(set HELIX_BFM_STATE_DIR or pass --state-dir)")
    names = [ShardName.parse(s) for s in shards] if shards else state.shards()
    skipped: dict[str, int] = {}
    audit_lines = _load_audit(state, skipped)
    evidence = [_load_shard(state, name, audit_lines, skipped) for name in names]
    vram, bad = vramlog.read(state.vram_log)
    _count(skipped, state.vram_log, state.root, bad)
    return RunEvidence(state_dir=state.root.resolve(), shards=evidence, vram=vram, skipped=skipped)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _count(skipped: dict[str, int], path: Path, root: Path, bad: int) -> None:
    if bad:
        skipped[_rel(path, root)] = bad


def _load_audit(state: StateDir, skipped: dict[str, int]) -> list[AuditLine]:
    lines, bad = auditlog.read(state.audit_log)
    _count(skipped, state.audit_log, state.root, bad)
    return lines


def _load_shard(state: StateDir, shard: str, audit: list[AuditLine],
                skipped: dict[str, int]) -> ShardEvidence:
    ev = ShardEvidence(shard=shard)
    path = state.batches_file(shard)
    ev.batches, ev.skipped_lines = batchlog.read(path)
    _count(skipped, path, state.root, ev.skipped_lines)
    # Several workers append to one file in turn; order by end time for the chart.
    ev.batches.sort(key=lambda b: b.t)
    try:
        ev.ladder = ladderfile.read(state.ladder_file(shard))
    except CorruptStateError as exc:
        ev.ladder_error = str(exc)
    if ev.ladder is not None:
        ev.rungs = [r for r in map(ladder_marker, ev.ladder.history) if r is not None]
    if not ev.rungs:
        # No usable ladder (deleted, corrupt, reset): the audit log still tells.
        ev.rungs = [r for r in map(audit_marker, (a for a in audit if a.shard == shard))
                    if r is not None]
    ev.rungs.sort(key=lambda r: r.t)
    ev.ooms = oom.read_records(state, shard)
    ev.live_pid = _live_worker(state, shard)
    return ev


def _live_worker(state: StateDir, shard: str) -> int | None:
    """The pid of the shard's registered worker if that very process (pid AND creation
    time: a state dir copied from another machine matches nothing) is alive."""
    try:
        reg = read_registration(state, shard)
        if reg is None:
            return None
        worker = reg.identity
        return worker.pid if worker.is_alive() else None
    except CrawlguardError:
        return None


def vram_for(ev: ShardEvidence, vram: list[VramSample]) -> list[VramSample]:
    """Samples of the shard's GPUs within the shard's time span."""
    span, gpus = ev.span(), ev.gpus()
    if span is None or not gpus:
        return []
    lo, hi = span
    return [s for s in vram if s.gpu in gpus and lo <= s.t <= hi]
