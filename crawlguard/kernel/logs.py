"""crawlguard's one logging namespace, and the console handler of the command.

Every module logs through ``get_logger(__name__)``, which names its logger
``crawlguard.<module path>`` (``crawlguard.sidecar.engine``,
``crawlguard.exporter.collector``; the kernel's own modules already start with
``crawlguard.``). So a program embedding crawlguard configures the single
logger ``crawlguard`` and gets everything, and nothing of crawlguard's is
configured on the root logger: the command line (``console``) and ``up``
(``to_file``) attach their handlers to ``crawlguard`` only, and leave other
libraries' loggers and the root's handlers as they found them.

``Outage`` is the one way a source that fails for a while (a VRAM or
shared-memory source, the exporter the embedded rules scrape) is logged: its
failure once, until it recovers, and its recovery once, so a source that is
down for a day writes two lines, not one per scrape. ``Outages`` is the same
per key, for a check repeated over many things (each shard's ladder).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = "crawlguard"
FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class _Stderr(logging.Handler):
    """Writes to ``sys.stderr`` as it is when a line is logged, not as it was when the
    handler was made (a test, or a program embedding the command, may swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


_console: list[_Stderr] = []


class _FileHandler(logging.FileHandler):
    """A log file that may stop taking lines (a full disk, a vanished state dir): said
    once on stderr, in one line, and the program goes on; never logging's traceback per
    line (``logging.Handler.handleError``)."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        self.failed = True
        exc = sys.exc_info()[1]
        with contextlib.suppress(Exception):
            sys.stderr.write(f"crawlguard: cannot write the log file {self.baseFilename} "
                             f"({exc}); its lines are dropped\n")


class Outage:
    """A source that may fail: the first failure is logged, then nothing until
    ``recovered``, which is logged once. ``what`` names the source in both lines."""

    def __init__(self, logger: logging.Logger, what: str, level: int = logging.WARNING) -> None:
        self._log = logger
        self.what = what
        self.level = level
        self.failing = False

    def failed(self, why: str, *args: object) -> None:
        """The source failed now; ``why`` is a %-format for ``args`` (logged once)."""
        if not self.failing:
            self._log.log(self.level, "%s " + why, self.what, *args)
        self.failing = True

    def recovered(self) -> None:
        """The source answered: logged once when it had failed."""
        if self.failing:
            self._log.info("%s recovered", self.what)
        self.failing = False


class Outages:
    """An ``Outage`` per key: ``what`` is a %-format naming the source by its key
    ("shard %s: ladder"). Only failing keys are held, so a key that recovers costs
    nothing."""

    def __init__(self, logger: logging.Logger, what: str, level: int = logging.WARNING) -> None:
        self._log = logger
        self.what = what
        self.level = level
        self._failing: dict[str, Outage] = {}

    def failed(self, key: str, why: str, *args: object) -> None:
        outage = self._failing.get(key)
        if outage is None:
            outage = self._failing[key] = Outage(self._log, self.what % key, self.level)
        outage.failed(why, *args)

    def recovered(self, key: str) -> None:
        outage = self._failing.pop(key, None)
        if outage is not None:
            outage.recovered()


def get_logger(module: str) -> logging.Logger:
    """The logger of ``module`` (pass ``__name__``), inside the ``crawlguard`` namespace."""
    name = module if module == ROOT or module.startswith(ROOT + ".") else f"{ROOT}.{module}"
    return logging.getLogger(name)


def console(verbose: bool = False) -> None:
    """Log crawlguard's INFO (DEBUG when ``verbose``) lines to stderr, once per process."""
    ours = logging.getLogger(ROOT)
    ours.setLevel(logging.DEBUG if verbose else logging.INFO)
    if _console:
        return
    handler = _Stderr()
    handler.setFormatter(logging.Formatter(FORMAT))
    ours.addHandler(handler)
    _console.append(handler)


@contextlib.contextmanager
def to_file(path: Path) -> Iterator[None]:
    """Meanwhile, crawlguard's INFO lines go to ``path`` and the console shows warnings
    only (``up`` redraws a live view on the terminal that log lines would tear)."""
    handler = _FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    ours = logging.getLogger(ROOT)
    own_level = ours.level
    if ours.getEffectiveLevel() > logging.INFO:
        ours.setLevel(logging.INFO)
    levels = [(h, h.level) for h in _console]
    for h, level in levels:
        h.setLevel(max(level, logging.WARNING))
    ours.addHandler(handler)
    try:
        yield
    finally:
        ours.removeHandler(handler)
        with contextlib.suppress(OSError):  # its last flush, on a full disk
            handler.close()
        ours.setLevel(own_level)
        for h, level in levels:
            h.setLevel(level)
