"""What every state file's schema is built of (pydantic), and the one way each is read.

Every JSON document and JSON line crawlguard keeps in the state directory has one
schema: a ``StateModel`` in the module that owns the file (the sidecar's files,
up.json and the drills' files here in ``kernel.formats``; worker.json and launch.json
in ``kernel.workers``, the OOM records in ``kernel.oom``, the baselines in
``exporter.baseline``, the run record in ``supervisor.runrecord``, the compaction journal
in ``exporter.compaction``; docs/architecture.md lists them all). The writer builds
the model and writes ``model_dump(mode="json")`` of it; every reader goes through
``read_file`` (a file), ``validate`` (a parsed document) or ``validate_line`` (a line
of a JSON-lines file), so what one reader accepts, every reader accepts. A model is:

- strict: an integer is a JSON integer (not ``true``, not ``1.0``, not ``"1"``), a
  number a JSON number, a string a string, an array a JSON array;
- finite: no number is infinite or NaN (``1e400`` parses as infinity and is
  refused, like a 400-digit integer where a number is expected), and times
  (``Time``) are dates a person can be shown;
- lenient about additions: unknown keys are ignored, so a later version's
  additions do not make a file unreadable to this one (a later *version* is
  refused by the version field);
- checked where the types cannot say it (a pid is from 1 to ``PID_MAX``, a factor
  above 0) by ``Field`` constraints and validators on the model itself.

A worker's identity (its pid and creation time, ``crawlguard.kernel.workers.
WorkerIdentity``) has one JSON form, ``WorkerJson``: nested where a file refers to a
worker (the ladder, audit lines), inherited where a file describes one (worker.json,
launch.json, an OOM record, the run record's children). ``check_identity`` holds an
identity made in code to the same rule. This module must not import psutil (the
sidecar's ``resume``, in a build's own supervisor loop, reads the ladder with it),
so ``WorkerIdentity`` itself lives in ``kernel.workers``.

``validate`` turns whatever JSON came off the disk into the model, or into
``CorruptStateError`` naming the file and the first field that does not fit; it
never raises anything else, which tests/kernel/test_state_files.py and
test_state_schemas.py check with arbitrary JSON. The JSON itself is parsed by
``statedir.read_json`` (or ``jsonlines`` for a line), which turns a directory in
a file's place, nesting too deep for the parser and numbers too long for it
into the same error instead of an OSError, a RecursionError or a ValueError.

pydantic costs the first import of a process about 60 ms (the build worker's
tracker, ``crawlguard.sidecar.resume``: ``bench/bench_import.py``); a build that
imports torch does not notice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crawlguard.kernel.errors import CorruptStateError
from crawlguard.kernel.statedir import read_json

Time = Annotated[float, Field(ge=-62_135_596_800, le=253_402_300_799)]
"""Unix seconds from the year 1 to the year 9999: what an alert's ``startsAt`` can
be, and what a report or ``crawlguard status`` can print as a date."""
PID_MAX = 2 ** 32 - 1
"""No OS hands out a larger pid (Windows' are 32-bit, Linux's at most 2**22)."""
Pid = Annotated[int, Field(gt=0, le=PID_MAX)]
CreateTime = Annotated[float, Field(ge=0, lt=1e11)]
"""A process creation time as psutil reports it: Unix seconds, before the year 5000."""
M = TypeVar("M", bound="StateModel")


class StateModel(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore",
                              populate_by_name=True, allow_inf_nan=False)


class HasIdentity(Protocol):
    """A worker identity (``crawlguard.kernel.workers.WorkerIdentity``), structurally."""

    @property
    def pid(self) -> int: ...

    @property
    def create_time(self) -> float: ...


class WorkerJson(StateModel):
    """A worker's identity as every state file and audit line writes it: its pid AND
    its process creation time (``crawlguard.kernel.workers.WorkerIdentity``)."""

    pid: Pid
    create_time: CreateTime

    @classmethod
    def of(cls, worker: HasIdentity) -> WorkerJson:
        return cls(pid=worker.pid, create_time=worker.create_time)


def worker_json(worker: HasIdentity | None) -> dict[str, Any] | None:
    """``{"pid": ..., "create_time": ...}``, or None: the JSON form of a worker identity."""
    return None if worker is None else WorkerJson.of(worker).model_dump()


def check_identity(pid: object, create_time: object) -> None:
    """``ValueError`` naming the field unless ``pid`` and ``create_time`` could be a
    process's: the rule of ``WorkerJson``, for an identity made in code."""
    try:
        WorkerJson.model_validate({"pid": pid, "create_time": create_time})
    except ValidationError as exc:
        raise ValueError(f"not a process's identity ({_reason(exc)})") from None


def validate(model: type[M], data: Any, where: str, what: str, hint: str = "") -> M:
    """``data`` (parsed JSON) as ``model``; ``CorruptStateError`` naming ``where`` (the
    file), saying it is not ``what`` crawlguard wrote, and ending with ``hint``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CorruptStateError(f"{where} is not {what} crawlguard wrote "
                                f"({_reason(exc)}){hint}") from exc


def read_file(model: type[M], path: Path, what: str, hint: str = "") -> M | None:
    """The file at ``path`` as ``model``; None when there is no file. ``CorruptStateError``
    (ending with ``hint``) when it is not a JSON file of ``model``, ``StateError`` when it
    cannot be read."""
    try:
        data = read_json(path)
    except CorruptStateError as exc:
        raise CorruptStateError(f"{exc}{hint}") from exc
    return None if data is None else validate(model, data, str(path), what, hint)


def validate_line(model: type[M], data: Any) -> M | None:
    """One parsed line of a JSON-lines file as ``model``; None when it does not fit (its
    reader skips and counts it)."""
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


def _reason(exc: ValidationError) -> str:
    """The first problem, with the field's path, short and without echoing the input."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "the document"
    more = f"; and {len(errors) - 1} more" if len(errors) > 1 else ""
    return f"{loc}: {first['msg']}{more}"
