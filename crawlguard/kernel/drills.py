"""``drills/<shard>.json``: a fire drill in progress (``crawlguard drill``), and its schema.

``crawlguard drill SHARD`` writes this file before it starts slowing the shard's
worker and removes it when the ladder has acted (or the drill ends otherwise).
While the drill is *live*, two readers act on it, each for the drilled worker
alone (its pid AND creation time, never the pid alone):

- the exporter (``exporter/sharedcollector.py``) serves ``shared_bytes`` as that
  worker's ``bfm_worker_shared_memory_bytes``: the spill evidence of a crawl, for
  one process, where the VRAM of a whole GPU would make every worker on it look
  full;
- the sidecar (``sidecar/engine.py`` -> ``sidecar/ladder.py``) judges that worker's
  crawl alerts as the drill's: the restart is carried out for real, but the crawl
  is not counted and the shard's rung and environment stay as they were, unless the
  drill was started with ``--keep`` (then the alerts are judged like any other).

Live means: the process that wrote the file (``drill``) is still running, and
``until`` has not passed. A drill that was killed, or that hangs, leaves a file that
marks nothing, so it can never make a real crawl of a later worker look like a drill.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from pydantic import Field

from .errors import CorruptStateError, CrawlguardError, ProcessError, StateError
from .formats.schema import StateModel, Time, WorkerJson, read_file
from .logs import get_logger
from .names import ShardName
from .statedir import StateDir, write_json_atomic
from .workers import WorkerIdentity

log = get_logger(__name__)
DRILLS = "drills"
HINT = "; delete it: no drill runs on it"


class DrillFile(StateModel):
    """The schema of ``drills/<shard>.json``."""

    id: str = Field(min_length=1, max_length=64)
    shard: str
    worker: WorkerJson
    """The worker the drill slows, and the only one its evidence and marking reach."""
    drill: WorkerJson
    """The ``crawlguard drill`` process: the drill is live while it runs."""
    started_at: Time
    """When the slowdown began; alerts that began earlier describe no drill."""
    until: Time
    """The drill's deadline; after it the file marks nothing even if its process hangs."""
    keep: bool = False
    """``--keep``: the drill's crawl is judged like any other (counted, and climbs)."""
    shared_bytes: int = Field(gt=0, le=2**53)
    """Shared GPU memory reported for the drilled worker (its spill evidence)."""

    @property
    def target(self) -> WorkerIdentity:
        return WorkerIdentity.from_json(self.worker)


def drills_dir(state: StateDir) -> Path:
    return state.root / DRILLS


def drill_path(state: StateDir, shard: str) -> Path:
    return drills_dir(state) / f"{ShardName.parse(shard)}.json"


def write_drill(state: StateDir, doc: DrillFile) -> None:
    write_json_atomic(drill_path(state, doc.shard), doc.model_dump(mode="json"))


def remove_drill(state: StateDir, shard: str, drill_id: str) -> None:
    """Remove the shard's drill file if it is still drill ``drill_id``'s."""
    path = drill_path(state, shard)
    try:
        doc = read_file(DrillFile, path, "a drill", HINT)
    except CrawlguardError:
        doc = None
    if doc is not None and doc.id != drill_id:
        return  # another drill's (ours was replaced): not ours to remove
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def read_drill(state: StateDir, shard: str) -> DrillFile | None:
    """The shard's drill file, live or not; None when there is none. ``CorruptStateError``
    when it is not one crawlguard wrote (for another shard included)."""
    doc = read_file(DrillFile, drill_path(state, shard), "a drill", HINT)
    if doc is not None and doc.shard != shard:
        raise CorruptStateError(f"{drill_path(state, shard)} names shard {doc.shard!r}{HINT}")
    return doc


Alive = Callable[[WorkerIdentity], bool]


def _alive(identity: WorkerIdentity) -> bool:
    try:
        return identity.is_alive()
    except ProcessError:
        return False  # cannot tell: a drill that cannot be proven live marks nothing


def is_live(doc: DrillFile, now: float, alive: Alive = _alive) -> bool:
    """Whether ``doc``'s drill is under way: its process runs and its deadline is ahead."""
    return now <= doc.until and alive(WorkerIdentity.from_json(doc.drill))


def live_drill(state: StateDir, shard: str, now: float, alive: Alive = _alive
               ) -> DrillFile | None:
    """The shard's drill when one is live; an unreadable file is no drill (logged)."""
    try:
        doc = read_drill(state, shard)
    except StateError as exc:
        log.warning("shard %s: drill file ignored: %s", shard, exc)
        return None
    return doc if doc is not None and is_live(doc, now, alive) else None


def live_drills(state: StateDir, now: float, alive: Alive = _alive) -> list[DrillFile]:
    """Every live drill of the state dir (the exporter asks at each scrape: one listing
    of a folder that is empty or missing outside drills)."""
    try:
        names = sorted(os.listdir(drills_dir(state)))
    except OSError:
        return []
    out = []
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        shard = name[:-len(".json")]
        try:
            ShardName.parse(shard)
        except CrawlguardError:
            continue
        doc = live_drill(state, shard, now, alive)
        if doc is not None:
            out.append(doc)
    return out
