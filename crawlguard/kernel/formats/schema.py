"""What the state files' schemas are built of (pydantic), and the one way each is read.

Every JSON document the sidecar owns (``ladderfile``: ladder.json, ``pausefile``:
sidecar.json, ``auditlog``: the lines of audit.jsonl) is a ``StateModel``:

- strict: a number is a JSON number (not ``true``, not ``"1"``), a string a string;
- numbers that are ratios are finite (``1e400`` parses as infinity and is
  refused, like NaN), and times (``Time``) are dates a person can be shown;
- unknown keys are ignored, so a later version's additions do not make a file
  unreadable to this one (a later *version* is refused by the version field).

``validate`` turns whatever JSON came off the disk into the model, or into
``CorruptStateError`` with a short reason; it never raises anything else, which
tests/kernel/test_state_schemas.py checks with arbitrary JSON. The JSON itself
is parsed by ``statedir.read_json`` (or ``jsonlines`` for a line), which turns
nesting too deep for the parser, and numbers too long for it, into the same
error instead of a RecursionError or a ValueError.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crawlguard.kernel.errors import CorruptStateError

Finite = Annotated[float, Field(allow_inf_nan=False)]
"""A finite JSON number (an integer reads as a float)."""
Time = Annotated[float, Field(allow_inf_nan=False, ge=-62_135_596_800, le=253_402_300_799)]
"""Unix seconds from the year 1 to the year 9999: what an alert's ``startsAt`` can
be, and what a report or ``crawlguard status`` can print as a date."""
M = TypeVar("M", bound="StateModel")


class StateModel(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore",
                              populate_by_name=True)


class HasIdentity(Protocol):
    """A worker identity (``crawlguard.kernel.workers.WorkerIdentity``), structurally:
    the formats must not import psutil, which that module needs."""

    @property
    def pid(self) -> int: ...

    @property
    def create_time(self) -> float: ...


class WorkerJson(StateModel):
    """A worker's identity as every state file and audit line writes it: its pid AND
    its process creation time (``crawlguard.kernel.workers.WorkerIdentity``)."""

    pid: int = Field(gt=0, lt=1 << 32)
    create_time: Time

    @classmethod
    def of(cls, worker: HasIdentity) -> WorkerJson:
        return cls(pid=worker.pid, create_time=worker.create_time)


def worker_json(worker: HasIdentity | None) -> dict[str, Any] | None:
    """``{"pid": ..., "create_time": ...}``, or None: the JSON form of a worker identity."""
    return None if worker is None else WorkerJson.of(worker).model_dump()


def validate(model: type[M], data: Any, where: str, what: str, hint: str = "") -> M:
    """``data`` (parsed JSON) as ``model``; ``CorruptStateError`` naming ``where``, saying
    it is not ``what`` crawlguard wrote, and ending with ``hint``."""
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise CorruptStateError(f"{where} is not {what} crawlguard wrote "
                                f"({_reason(exc)}){hint}") from exc


def _reason(exc: ValidationError) -> str:
    """The first problem, short and without echoing the input back."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "the document"
    more = f"; and {len(errors) - 1} more" if len(errors) > 1 else ""
    return f"{loc}: {first['msg']}{more}"
