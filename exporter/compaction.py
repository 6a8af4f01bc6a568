"""Keeping the workers' metrics directory readable and small.

Two jobs of the exporter, run before each scrape's merge (``WorkerCollector``):

**Quarantine.** A file that does not read (``mpfiles.read``: a truncated or
8-byte file, left by a disk that filled or a copy cut short; a key that is not
``[metric, sample, labels, help]``; a negative counter) or whose name is not
one crawlguard writes (``mpfiles.parse_name``) would make the merge fail, so
every scrape would answer 500 and detection would go blind for every shard. It
is never merged. A bad file of a dead (or unidentifiable) worker, a bad archive
and a file of a foreign name are moved to ``metrics/quarantine/``, logged once
and counted in ``bfm_exporter_corrupt_files_total``; the other files are served
as usual. A bad file of a *live* worker is moved and counted too, unless it is
shorter than its 8-byte header: that is a file the worker is creating right now
(the writer creates it empty, then sizes it), skipped and logged once. The
worker notices within about a second that its file was moved
(``mpfiles.MetricsFile.replaced``) and writes a new one holding every series it
holds, so its crawl is still seen; ``BFMMetricsFileCorrupt`` tells the people.

**Compaction.** Each worker start leaves a ``counter_<key>.db`` (a 64 KiB sparse
file) that the exporter must read at every scrape, so a rebuild with hundreds
of restarts would grow without bound. The counter files of dead workers are
merged into one archive, ``counter_archive.db``, by a crash-safe protocol:

1. recover any previous compaction left unfinished (below);
2. write the new archive (old archive + the dead files, summed per series) to
   ``counter_archive.db.tmp`` and fsync it; the ``.tmp`` name is never served;
3. write the journal ``compaction.json`` (atomic replace + fsync): the dead
   files now contained in the temporary archive;
4. rename the temporary archive over ``counter_archive.db``;
5. delete the dead files, then the journal.

A scrape never sees step 4 without step 5, because compaction and the merge
run under one lock file (``metrics/.scrape.lock``), shared by every exporter
serving the same state dir. If the exporter dies anywhere,
``recover()`` (step 1, and before the first scrape) decides by what is on disk:
no journal: steps 2-3 never completed, delete a stray ``.tmp``, nothing was
merged; a journal *and* the ``.tmp``: the rename (4) did not happen, so the old
archive plus the dead files are still the truth, delete both; a journal without
the ``.tmp``: the rename happened, so the journal's files are in the archive,
delete those still present (finish 5). A counter is therefore never lost and
never counted twice, so no total goes backwards or jumps.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

from filelock import FileLock, Timeout
from pydantic import AfterValidator

from crawlguard.kernel.errors import CorruptStateError, StateError
from crawlguard.kernel.formats.schema import StateModel, read_file
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.statedir import fsync_dir, write_json_atomic
from crawlguard.kernel.workers import WorkerIdentity

from . import mpfiles
from .mpfiles import ARCHIVE, BadMetricsFile, Entry, Kind

log = get_logger(__name__)

TMP_SUFFIX = ".tmp"
JOURNAL = "compaction.json"
QUARANTINE = "quarantine"
LOCK = ".scrape.lock"

AliveCheck = Callable[[WorkerIdentity], bool]
# Test hook: called with the step's name; raising (or os._exit) there simulates a crash.
CrashPoint = Callable[[str], None]


def _counter_file(name: str) -> str:
    parsed = mpfiles.parse_name(name)
    if parsed is None or parsed.kind != "counter" or parsed.worker is None:
        raise ValueError(f"{name!r} is no worker's counter file")
    return name


class Journal(StateModel):
    """The schema of ``metrics/compaction.json``: the dead workers' counter files that
    the new archive holds."""

    merged: list[Annotated[str, AfterValidator(_counter_file)]]


class MetricsJanitor:
    """Quarantine and compaction of one metrics directory (see the module docstring)."""

    def __init__(self, directory: Path, alive: AliveCheck,
                 crash_point: CrashPoint | None = None) -> None:
        self.dir = Path(directory)
        self._alive = alive
        self._crash = crash_point or (lambda step: None)
        self.corrupt_total = 0
        self._skipped_live: set[str] = set()

    @contextlib.contextmanager
    def locked(self, timeout: float = 10.0) -> Iterator[bool]:
        """Hold the scrape lock (yields False when another exporter held it too long:
        serve without compacting rather than not at all)."""
        lock = FileLock(str(self.dir / LOCK), timeout=timeout)
        try:
            lock.acquire()
        except Timeout:
            log.warning("%s is held for more than %gs; serving without compaction",
                        self.dir / LOCK, timeout)
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    @property
    def archive(self) -> Path:
        return self.dir / ARCHIVE

    @property
    def journal(self) -> Path:
        return self.dir / JOURNAL

    def _is_dead(self, path: str) -> bool:
        """A counter file of a worker that is gone (never the archive)."""
        name = mpfiles.parse_name(os.path.basename(path))
        return (name is not None and name.kind == "counter" and name.worker is not None
                and not self._alive(name.worker))

    # -- quarantine ------------------------------------------------------------

    def read_all(self) -> list[tuple[Kind, list[Entry]]]:
        """The entries of every metrics file that reads (each read once, checked); the
        others are never merged: quarantined, or skipped while their worker lives."""
        out: list[tuple[Kind, list[Entry]]] = []
        for path in sorted(glob.glob(str(self.dir / "*.db"))):
            name = mpfiles.parse_name(os.path.basename(path))
            if name is None:
                self._bad(path, BadMetricsFile("not a file name crawlguard writes"))
                continue
            try:
                out.append((name.kind, mpfiles.read(path, name.kind)))
            except FileNotFoundError:
                continue  # a dead worker's gauges, pruned meanwhile
            except (BadMetricsFile, OSError) as exc:
                self._bad(path, exc)
        return out

    def _bad(self, path: str, exc: Exception) -> None:
        name = mpfiles.parse_name(os.path.basename(path))
        live = name is not None and name.worker is not None and self._alive(name.worker)
        if live and _being_created(path):
            if path not in self._skipped_live:
                self._skipped_live.add(path)
                log.warning("metrics file %s of a live worker is unreadable (%s); skipped "
                            "until it reads", path, exc)
            return
        target = self.dir / QUARANTINE / os.path.basename(path)
        try:
            target.parent.mkdir(exist_ok=True)
            os.replace(path, target)
        except OSError as err:
            log.error("metrics file %s is unreadable (%s) and cannot be quarantined: %s",
                      path, exc, err)
            return
        self.corrupt_total += 1
        self._skipped_live.discard(path)
        if live:
            log.error("metrics file %s of a live worker is unreadable (%s): moved to %s; "
                      "that worker writes a new one within about a second "
                      "(mpfiles.LOOK_EVERY_S) and its series are back", path, exc, target)
        else:
            log.error("metrics file %s is unreadable (%s): moved to %s; the other workers' "
                      "series are served", path, exc, target)

    # -- compaction ------------------------------------------------------------

    def recover(self) -> None:
        """Finish or undo a compaction the exporter died in (module docstring)."""
        tmp = self.dir / (ARCHIVE + TMP_SUFFIX)
        try:
            journal = read_file(Journal, self.journal, "a compaction journal")
        except CorruptStateError as exc:
            # Written atomically, so only a hand can have broken it: what it listed is
            # unknown, and no file is deleted on its word.
            log.error("%s; ignored", exc)
            journal = None
            with contextlib.suppress(OSError):
                self.journal.unlink()
        if journal is None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            return
        if tmp.exists():  # crashed before the rename: the old state is whole
            tmp.unlink()
        else:             # crashed after it: the journal's files are in the archive
            for name in journal.merged:
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / name).unlink()
            fsync_dir(self.dir)
        self.journal.unlink()
        log.warning("finished an interrupted compaction of %s", self.dir)

    def compact(self) -> int:
        """Merge the dead workers' counter files into the archive; returns how many."""
        self.recover()
        dead = [p for p in sorted(glob.glob(str(self.dir / "counter_*.db")))
                if os.path.basename(p) != ARCHIVE and self._is_dead(p)]
        if not dead:
            return 0
        totals: dict[str, float] = {}
        merged: list[str] = []
        sources = [str(self.archive)] if self.archive.exists() else []
        for path in sources + dead:
            try:
                entries = mpfiles.read(path, "counter")
            except FileNotFoundError:
                continue
            except (BadMetricsFile, OSError) as exc:
                self._bad(path, exc)
                continue
            for e in entries:
                key = mpfiles.encode_key(e.metric, e.sample, dict(e.labels), e.help)
                totals[key] = totals.get(key, 0.0) + e.value
            if path in dead:
                merged.append(path)
        if not merged:
            return 0
        tmp = self.dir / (ARCHIVE + TMP_SUFFIX)
        _write_archive(tmp, totals)
        self._crash("tmp_written")
        write_json_atomic(self.journal, Journal(merged=[os.path.basename(p) for p in merged])
                          .model_dump(mode="json"))
        self._crash("journal_written")
        os.replace(tmp, self.archive)
        fsync_dir(self.dir)
        self._crash("archive_replaced")
        for path in merged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self._crash("source_deleted")
        fsync_dir(self.dir)
        self.journal.unlink()
        return len(merged)


def _write_archive(path: Path, totals: dict[str, float]) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stray one from an attempt that never reached its journal
    try:
        out = mpfiles.MetricsFile(path)
        try:
            for key in sorted(totals):
                out.write_value(key, totals[key], 0.0)
        finally:
            out.close()
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc



def _being_created(path: str) -> bool:
    """A file shorter than its header: the only unreadable state a live worker's own
    writer passes through (``MetricsFile`` creates it empty, then sizes it; a sized file
    of zeros reads as empty). Anything else is damage (garbage written over it), and
    skipping it would hide that worker's crawl for as long as it lives."""
    try:
        return os.stat(path).st_size < mpfiles.HEADER_BYTES
    except OSError:
        return True
