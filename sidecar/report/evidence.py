"""The evidence of one rebuild, read from its state dir (``crawlguard report``).

Reads only; never writes state and never talks to the sidecar, so it runs
after a rebuild, during one (files are being appended to) and on a copy of a
state dir taken from another machine. Inputs:

- ``shards/<shard>/batches.jsonl``: one line per finished batch (the tracker);
- ``shards/<shard>/ladder.json``: crawls, rung, env overrides, history (the sidecar);
- ``audit.jsonl``: the sidecar's decisions, used for rung markers of a shard
  whose ladder has no usable history;
- ``vram.jsonl`` (optional): ``{"t", "gpu", "used_bytes", "total_bytes"}`` samples.

Lines of a JSON-lines file that do not parse (a line being written right now,
a crash mid-write, an edit) are skipped and counted, never a traceback: the
report is most wanted exactly when something went wrong.

``summary`` turns it into Markdown; the charts live in ``chart`` because they
need matplotlib (the optional ``report`` extra); this module needs only the
standard library.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from crawlguard import oom
from crawlguard.errors import CorruptStateError, CrawlguardError, StateError
from crawlguard.statedir import StateDir, read_json

T = TypeVar("T")

VRAM_LOG = "vram.jsonl"
"""Optional VRAM samples under the state dir (the exporter may record them)."""

# ladder.json history entries and audit.jsonl lines are the sidecar's
# (sidecar/state.py: {"kind": "rung", "rung": "cpu", "at": ..., "outcome": ...});
# these are the keys tried, first match wins, so an older or renamed field still reads.
TIME_KEYS = ("at", "t", "timestamp", "time", "ts")
RUNG_KEYS = ("rung", "action")
OUTCOME_KEYS = ("outcome", "result", "status")
RUNGS = ("restart", "cpu")
MARKERS = (*RUNGS, "reset")
"""What the report marks: the rungs taken and the resets that undid them."""


class ReportError(CrawlguardError):
    """The report cannot be made (no state, matplotlib missing)."""


@dataclass(frozen=True)
class Batch:
    """One line of batches.jsonl."""

    t: float
    stage: str
    device: str
    gpu: str
    pid: int
    genes: float
    seconds: float
    rate: float
    ema: float | None
    baseline: float | None
    streak: int
    factor: float

    @property
    def threshold(self) -> float | None:
        return None if self.baseline is None else self.baseline / self.factor

    @property
    def slow(self) -> bool:
        """Slower than the crawl threshold of its own (stage, device) baseline."""
        limit = self.threshold
        return limit is not None and self.rate < limit

    @property
    def lost_seconds(self) -> float:
        """Seconds beyond what the batch would have taken at its baseline, if slow."""
        if not self.slow or self.baseline is None:
            return 0.0
        return max(self.seconds - self.genes / self.baseline, 0.0)


@dataclass(frozen=True)
class RungEvent:
    t: float | None
    rung: str
    outcome: str
    reason: str
    source: str  # "ladder" or "audit"


@dataclass(frozen=True)
class VramSample:
    t: float
    gpu: str
    used_bytes: float
    total_bytes: float


@dataclass
class ShardEvidence:
    shard: str
    batches: list[Batch] = field(default_factory=list)
    ladder: dict[str, Any] | None = None
    ladder_error: str | None = None
    rungs: list[RungEvent] = field(default_factory=list)
    skipped_lines: int = 0
    ooms: list[oom.OomRecord] = field(default_factory=list)
    """Out-of-memory records of the shard's workers (``crawlguard.oom``), oldest first."""

    @property
    def oom_deaths(self) -> int:
        """OOM records whose worker did not survive (no later batch finished)."""
        return sum(1 for r in self.ooms if not r.recovered)

    @property
    def genes(self) -> float:
        return sum(b.genes for b in self.batches)

    @property
    def crawls(self) -> int:
        value = (self.ladder or {}).get("crawls", 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    @property
    def rung(self) -> str:
        value = (self.ladder or {}).get("rung", "none")
        return value if isinstance(value, str) else "none"

    @property
    def env(self) -> dict[str, str]:
        value = (self.ladder or {}).get("env", {})
        if not isinstance(value, dict):
            return {}
        return {str(k): str(v) for k, v in value.items()}

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
        for rung in self.rungs:
            if rung.t is None or rung.rung not in RUNGS:
                continue
            before = [b for b in self.batches if b.t <= rung.t]
            if not before or before[-1].baseline is None or before[-1].baseline <= 0:
                continue
            last = before[-1]
            assert last.baseline is not None
            lost += max(rung.t - last.t - last.genes / last.baseline, 0.0)
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

def iter_jsonl(path: Path) -> Iterator[dict[str, Any] | None]:
    """Each line of ``path`` as a dict, or ``None`` for a line that is not one."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            yield None
            continue
        yield value if isinstance(value, dict) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def parse_batch(obj: Mapping[str, Any]) -> Batch | None:
    """A batch line, or ``None`` when a required field is missing or mistyped."""
    t, genes, seconds, rate, factor = (_number(obj.get(k)) for k in
                                       ("t", "genes", "seconds", "rate", "factor"))
    stage, device = obj.get("stage"), obj.get("device")
    if (t is None or genes is None or seconds is None or rate is None or factor is None
            or factor <= 0 or not isinstance(stage, str) or not isinstance(device, str)):
        return None
    baseline = _number(obj.get("baseline"))
    return Batch(
        t=t, stage=stage, device=device, gpu=str(obj.get("gpu") or ""),
        pid=int(_number(obj.get("pid")) or 0), genes=genes, seconds=seconds, rate=rate,
        ema=_number(obj.get("ema")),
        baseline=baseline if baseline is not None and baseline > 0 else None,
        streak=int(_number(obj.get("streak")) or 0), factor=factor)


def parse_time(value: Any) -> float | None:
    """Unix seconds from a number or an ISO-8601 string (naive = UTC)."""
    number = _number(value)
    if number is not None:
        return number
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _first(obj: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in obj:
            return obj[key]
    return None


def parse_rung(obj: Mapping[str, Any], source: str) -> RungEvent | None:
    """A rung taken, or a reset, from a history entry or audit line; ``None`` otherwise.

    Ladder history entries have a ``kind`` ("rung", "reset", "crawl", ...),
    audit lines an ``event`` ("rung_done", "reset", "alert", ...). Entries of
    other kinds (a crawl counted, a refused or duplicate alert, a rung decided
    whose outcome is logged again later) are not markers: no rung was taken.
    """
    kind = obj.get("kind", obj.get("event"))
    if kind in MARKERS:
        rung: Any = kind
    elif kind is None or kind in ("rung", "rung_done"):
        rung = _first(obj, RUNG_KEYS)
    else:
        return None
    if not isinstance(rung, str) or rung not in MARKERS:
        return None
    outcome = _first(obj, OUTCOME_KEYS)
    reason = obj.get("reason")
    return RungEvent(t=parse_time(_first(obj, TIME_KEYS)), rung=rung,
                     outcome=outcome if isinstance(outcome, str) else "",
                     reason=reason if isinstance(reason, str) else "", source=source)


def load_run(state_dir: str | Path, shards: list[str] | None = None) -> RunEvidence:
    """Everything the report shows, from one state dir."""
    state = StateDir(state_dir)
    if not state.root.is_dir():
        raise ReportError(f"state dir {state.root} does not exist "
                          "(set HELIX_BFM_STATE_DIR or pass --state-dir)")
    names = shards if shards else state.shards()
    skipped: dict[str, int] = {}
    audit_lines = _load_dicts(state.audit_log, state.root, skipped)
    evidence = [_load_shard(state, name, audit_lines, skipped) for name in names]
    vram = _load_vram(state.root / VRAM_LOG, state.root, skipped)
    return RunEvidence(state_dir=state.root, shards=evidence, vram=vram, skipped=skipped)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _load_lines(path: Path, root: Path, skipped: dict[str, int],
                parse: Callable[[dict[str, Any]], T | None]) -> list[T]:
    """Every line of ``path`` that ``parse`` accepts; the others are counted in ``skipped``."""
    out: list[T] = []
    bad = 0
    for obj in iter_jsonl(path):
        item = None if obj is None else parse(obj)
        if item is None:
            bad += 1
        else:
            out.append(item)
    if bad:
        skipped[_rel(path, root)] = bad
    return out


def _load_dicts(path: Path, root: Path, skipped: dict[str, int]) -> list[dict[str, Any]]:
    return _load_lines(path, root, skipped, lambda obj: obj)


def _load_shard(state: StateDir, shard: str, audit: list[dict[str, Any]],
                skipped: dict[str, int]) -> ShardEvidence:
    ev = ShardEvidence(shard=shard)
    path = state.batches_file(shard)
    ev.batches = _load_lines(path, state.root, skipped, parse_batch)
    ev.skipped_lines = skipped.get(_rel(path, state.root), 0)
    # Several workers append to one file in turn; order by end time for the chart.
    ev.batches.sort(key=lambda b: b.t)
    try:
        data = read_json(state.ladder_file(shard))
    except CorruptStateError as exc:
        ev.ladder_error = str(exc)
        data = None
    if isinstance(data, dict):
        ev.ladder = data
    history = (ev.ladder or {}).get("history")
    if isinstance(history, list):
        ev.rungs = [r for r in (parse_rung(h, "ladder") for h in history
                                if isinstance(h, dict)) if r is not None]
    if not ev.rungs:
        # No usable ladder (deleted, corrupt, reset): the audit log still tells.
        ev.rungs = [r for r in (parse_rung(a, "audit") for a in audit
                                if a.get("shard") == shard) if r is not None]
    ev.rungs.sort(key=lambda r: (r.t is None, r.t or 0.0))
    ev.ooms = oom.read_records(state, shard)
    return ev


def parse_vram(obj: Mapping[str, Any]) -> VramSample | None:
    t, used, total = (_number(obj.get(k)) for k in ("t", "used_bytes", "total_bytes"))
    if t is None or used is None or total is None or total <= 0:
        return None
    return VramSample(t=t, gpu=str(obj.get("gpu", "")), used_bytes=used, total_bytes=total)


def _load_vram(path: Path, root: Path, skipped: dict[str, int]) -> list[VramSample]:
    out = _load_lines(path, root, skipped, parse_vram)
    out.sort(key=lambda s: s.t)
    return out


def vram_for(ev: ShardEvidence, vram: list[VramSample]) -> list[VramSample]:
    """Samples of the shard's GPUs within the shard's time span."""
    span, gpus = ev.span(), ev.gpus()
    if span is None or not gpus:
        return []
    lo, hi = span
    return [s for s in vram if s.gpu in gpus and lo <= s.t <= hi]
