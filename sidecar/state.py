"""The durable ladder of every shard: ``<state>/shards/<shard>/ladder.json``.

The file is read and written only through ``crawlguard.kernel.formats.ladderfile`` (its
header: version, crawls, rung, env, history); this module maps the whole
document to a ``ShardLadder`` and back. Every write is an atomic replace made while
holding ``LadderStore.lock()``, which includes ``StateDir.lock()``, the lock every
writer of shard state shares; it is fsync'd after the lock is released
(``LadderStore.sync``). The ``env``
object is the resume environment that ``crawlguard.sidecar.resume.resume_env`` (and so
every supervisor loop) reads, so it must always map variable names to strings;
``to_json`` below is the only writer of that shape. Schema (version 1)::

    {
      "schema": 1,
      "shard": "confluence",
      "crawls": 2,                          # crawl episodes counted
      "rung": "none" | "restart" | "cpu",   # the highest rung taken
      "env": {"BGEM3_DEVICE": "cpu"},       # resume overrides (sidecar/resume.py)
      "pending": null | {"id": "r2", "rung": "cpu", "decided_at": 1.0,
                         "worker": null | {"pid": 1, "create_time": 1.0},
                         "source": "alert" | "manual", "reason": "..."},
      "episode": null | {"worker": "<pid>-<ms>" | null, "opened_at": 1.0,
                         "alertname": "...", "fingerprint": "...", "starts_at": 1.0},
      "last_rung_decided_at": null | 1.0,
      "last_rung_effective_at": null | 1.0, # when the replaced worker was gone
      "seq": 2,                             # rung ids are "r<seq>"
      "seen": ["firing|<fingerprint>|<startsAt epoch>", ...],   # at most 256
      "history": [{"kind": "crawl" | "rung" | "refused" | "stale" | "same_episode" | "no_worker"
                          | "in_progress" | "resolved" | "reset",
                   "at": 1.0, ...optional fields of ladder.Entry}]  # at most 200
    }

The pause switch is ``<state>/sidecar.json`` (``{"paused": bool, "since": ...,
"reason": ...}``): it survives a restart of the sidecar.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from crawlguard.kernel.errors import CorruptStateError, StateError
from crawlguard.kernel.formats import ladderfile
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.statedir import StateDir, read_json, sync_file, write_json_atomic
from crawlguard.kernel.workers import WorkerIdentity

from .ladder import RUNG_LEVEL, Entry, Episode, Pending, ShardLadder

log = get_logger(__name__)
SCHEMA = ladderfile.VERSION
_ENTRY_ORDER = tuple(f.name for f in fields(Entry))
_ENTRY_FIELDS = frozenset(_ENTRY_ORDER)


def _worker_json(worker: WorkerIdentity | None) -> dict[str, Any] | None:
    return None if worker is None else {"pid": worker.pid, "create_time": worker.create_time}


def entry_json(entry: Entry) -> dict[str, Any]:
    # By hand, not dataclasses.asdict: its deep copy was a third of the cost of a write.
    out: dict[str, Any] = {}
    for name in _ENTRY_ORDER:
        value = getattr(entry, name)
        if value is not None:
            out[name] = value
    if entry.worker is not None:
        out["worker"] = _worker_json(entry.worker)
    return out


def to_json(state: ShardLadder) -> dict[str, Any]:
    pending = None
    if state.pending is not None:
        pending = asdict(state.pending)
        pending["worker"] = _worker_json(state.pending.worker)
    return {
        "schema": SCHEMA,
        "shard": state.shard,
        "crawls": state.crawls,
        "rung": state.rung,
        "env": dict(state.env),
        "pending": pending,
        "episode": None if state.episode is None else asdict(state.episode),
        "last_rung_decided_at": state.last_rung_decided_at,
        "last_rung_effective_at": state.last_rung_effective_at,
        "seq": state.seq,
        "seen": list(state.seen),
        "history": [entry_json(e) for e in state.history],
    }


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a number")
    return float(value)


def _opt_num(value: Any, what: str) -> float | None:
    return None if value is None else _num(value, what)


def _worker(value: Any) -> WorkerIdentity | None:
    if value is None:
        return None
    pid = value["pid"]
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ValueError("worker.pid must be a positive integer")
    return WorkerIdentity(pid, _num(value["create_time"], "worker.create_time"))


def _entry(value: Any) -> Entry:
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise ValueError("history entries must be objects with a 'kind'")
    kwargs = {k: v for k, v in value.items() if k in _ENTRY_FIELDS}
    kwargs["at"] = _num(value.get("at"), "history.at")
    kwargs["worker"] = _worker(value.get("worker"))
    return Entry(**kwargs)


def from_json(shard: str, data: Any) -> ShardLadder:
    """Parse what ``to_json`` wrote: the header with ``ladderfile.parse``
    (CorruptStateError), the rest here (ValueError/KeyError/TypeError)."""
    doc = ladderfile.parse(data)
    env, crawls = doc.env, doc.crawls
    rung: Any = doc.rung  # a Rung once the check below passed
    if rung not in RUNG_LEVEL:
        raise ValueError(f"unknown rung {rung!r}")
    e = data.get("episode")
    episode = None if e is None else Episode(
        worker=None if e.get("worker") is None else str(e["worker"]),
        opened_at=_num(e["opened_at"], "episode.opened_at"), alertname=str(e["alertname"]),
        fingerprint=str(e["fingerprint"]), starts_at=_num(e["starts_at"], "episode.starts_at"))
    return ShardLadder(
        shard=shard, crawls=crawls, rung=rung, env=dict(env),
        pending=_pending(data.get("pending")), episode=episode,
        last_rung_decided_at=_opt_num(data.get("last_rung_decided_at"), "last_rung_decided_at"),
        last_rung_effective_at=_opt_num(data.get("last_rung_effective_at"),
                                        "last_rung_effective_at"),
        seq=int(data.get("seq", 0)),
        seen=tuple(str(k) for k in data.get("seen", [])),
        history=tuple(_entry(h) for h in doc.history),
    )


def _pending(p: Any) -> Pending | None:
    if p is None:
        return None
    rung = p["rung"]
    if rung not in ("restart", "cpu"):
        raise ValueError(f"pending rung {rung!r} is not restart or cpu")
    return Pending(id=str(p["id"]), rung=rung, decided_at=_num(p["decided_at"], "decided_at"),
                   worker=_worker(p.get("worker")), source=str(p.get("source", "")),
                   reason=str(p.get("reason", "")))


class LadderStore:
    """Load and save shard ladders and the pause switch in one state dir.

    A change is a read-modify-write under ``lock()``: this process's mutex, then
    ``StateDir.lock()``. ``save`` replaces the file atomically without fsync, a
    fraction of a millisecond: from then on every process (a restarted sidecar
    too) reads the new ladder. ``sync`` makes it survive a crash of the host; it
    is called after the lock is released: by a rung's thread before it signals,
    by a manual request before it answers, and for the webhook, which takes the
    lock on the event loop and must not wait for a disk flush, on a background
    thread (``sync_later``). Nothing fsyncs under the lock.

    Parsed ladders are cached with the file's stat signature (inode, size,
    mtime): a file replaced behind our back (another writer, a person) has a
    new inode and is parsed again, while the common case, a shard this process
    wrote last, costs one ``stat`` instead of a JSON parse.
    """

    def __init__(self, state_dir: StateDir) -> None:
        self.dir = state_dir
        self._cache: dict[str, tuple[tuple[int, int, int] | None, ShardLadder]] = {}
        self._mutex = threading.Lock()
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fsync")

    @property
    def pause_file(self) -> Path:
        return self.dir.root / "sidecar.json"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Held around every read-modify-write of a ladder or the pause switch."""
        with self._mutex, self.dir.lock():
            yield

    def _signature(self, path: Path) -> tuple[int, int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot stat {path}: {exc.strerror or exc}") from exc
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def load(self, shard: str) -> ShardLadder:
        path = self.dir.ladder_file(ShardName.parse(shard))
        sig = self._signature(path)
        cached = self._cache.get(shard)
        if cached is not None and cached[0] == sig:
            return cached[1]
        doc = ladderfile.read(path)
        if doc is None:
            state = ShardLadder(shard=shard)
        else:
            try:
                state = from_json(shard, doc.data)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise CorruptStateError(f"{path} is not a ladder crawlguard wrote ({exc}); "
                                        "fix or delete it to reset the shard") from exc
        self._cache[shard] = (sig, state)
        return state

    def save(self, state: ShardLadder) -> None:
        """Replace the shard's ladder (under ``lock()``); durable after ``sync``."""
        path = self.dir.ladder_file(state.shard)
        ladderfile.write(path, to_json(state), durable=False)
        self._cache[state.shard] = (self._signature(path), state)

    def sync(self, shard: str) -> None:
        """Make the shard's ladder as saved so far durable (fsync; outside ``lock()``)."""
        sync_file(self.dir.ladder_file(ShardName.parse(shard)))

    def sync_later(self, shard: str) -> None:
        """``sync`` on a background thread, for a caller that must not wait (the webhook):
        durable moments later instead of at the kernel's next writeback."""
        try:
            self._syncer.submit(self._sync_logged, shard)
        except RuntimeError:  # closed: the sidecar is stopping, so waiting is fine
            self._sync_logged(shard)

    def _sync_logged(self, shard: str) -> None:
        try:
            self.sync(shard)
        except StateError as exc:  # nobody waits for it; a rung's own sync will retry
            log.error("shard %s: %s", shard, exc)

    def close(self) -> None:
        """Finish the syncs queued so far."""
        self._syncer.shutdown(wait=True)

    def shards(self) -> list[str]:
        """Shards that have a ladder file."""
        return [s for s in self.dir.shards() if self.dir.ladder_file(s).exists()]

    def paused(self) -> dict[str, Any]:
        data = read_json(self.pause_file)
        if data is None:
            return {"paused": False}
        if not isinstance(data, dict) or not isinstance(data.get("paused"), bool):
            raise CorruptStateError(f"{self.pause_file}: 'paused' must be true or false")
        return data

    def set_paused(self, paused: bool, since: float, reason: str) -> None:
        """Write the pause switch (under ``lock()``); durable after ``sync_paused``."""
        write_json_atomic(self.pause_file, {"paused": paused, "since": since, "reason": reason},
                          durable=False)

    def sync_paused(self) -> None:
        sync_file(self.pause_file)
