"""The state files' schemas: pydantic models (the sidecar's files) and frozen dataclasses
held to JSON by ``load`` (the other files). Both halves come from two branches merged
together and are made one in the next commit.

What the state files' schemas are built of (pydantic), and the one way each is read.

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

The schema of a state file is a frozen dataclass; ``load`` holds JSON to it.

Every JSON state file and JSON line crawlguard reads (outside the sidecar's own
files) has one schema: a frozen dataclass in the module that owns the file, whose
field types are the format and whose ``__post_init__`` holds the rules the types
cannot say (a pid is positive, a factor above 0). The writer builds the dataclass
and writes ``dataclasses.asdict`` of it; every reader goes through ``load``, so
what one reader accepts, every reader accepts.

``load`` takes what ``json.loads`` returns and is strict: ``int`` is a JSON
integer (never a bool), ``float`` any finite JSON number (``1e400`` reads as
infinity and is refused), ``str`` a string, ``X | None`` also null, ``tuple[X, ...]``
and ``list[X]`` an array, ``dict[str, X]`` an object, ``Literal[...]`` one of its
values, a dataclass an object. A missing key takes the field's default or is an
error; keys the schema does not name are ignored (a later writer may add some).
Anything else is ``SchemaError`` naming the field, never a traceback of a
foreign error. ``read_file`` adds the file: a file that does not exist is None,
one that is not JSON or does not fit is ``CorruptStateError`` naming the file
and the field.

Standard library only, without pydantic: the build worker's tracker reads its
baseline and OOM records with it, and ``crawlguard.sidecar.resume`` (a build's
own supervisor loop) must not pay for a validation library at import.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crawlguard.kernel.errors import CorruptStateError
from crawlguard.kernel.statedir import read_json

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

T = TypeVar("T")
Check = Callable[[Any, str], Any]


class SchemaError(ValueError):
    """JSON that does not fit a schema; the message names the field."""


def load(cls: type[T], data: Any) -> T:
    """``data`` as ``cls`` (a dataclass); ``SchemaError`` when it does not fit."""
    result: T = _checker(cls)(data, "")
    return result


def read_file(path: Path, cls: type[T], what: str) -> T | None:
    """The file at ``path`` as ``cls``; None when there is no file. ``StateError`` when it
    cannot be read, ``CorruptStateError`` when it is not JSON or does not fit."""
    data = read_json(path)
    if data is None:
        return None
    try:
        return load(cls, data)
    except SchemaError as exc:
        raise CorruptStateError(f"{what} {path} is unreadable: {exc}") from exc


_CHECKERS: dict[Any, Check] = {}
_SCALARS: dict[Any, tuple[Callable[[Any], bool], str]] = {
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    str: (lambda v: isinstance(v, str), "a string"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    type(None): (lambda v: v is None, "null"),
}


def _checker(tp: Any) -> Check:
    found = _CHECKERS.get(tp)
    if found is None:
        found = _CHECKERS[tp] = _build(tp)
    return found


def _where(path: str) -> str:
    return f"{path}: " if path else ""


def _fail(path: str, expected: str, value: Any) -> SchemaError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return SchemaError(f"{_where(path)}expected {expected}, got {shown}")


def _build(tp: Any) -> Check:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass(tp)
    if tp in _SCALARS:
        accepts, expected = _SCALARS[tp]

        def check_scalar(v: Any, p: str) -> Any:
            if accepts(v):
                return v
            raise _fail(p, expected, v)
        return check_scalar
    if tp is float:
        def check_float(v: Any, p: str) -> float:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                try:
                    f = float(v)  # an integer of 400 digits overflows
                except OverflowError:
                    f = math.inf
                if math.isfinite(f):
                    return f
            raise _fail(p, "a finite number", v)
        return check_float
    if origin is typing.Literal:
        allowed = tuple(args)

        def check_literal(v: Any, p: str) -> Any:
            for a in allowed:
                if v == a and type(v) is type(a):
                    return a
            raise _fail(p, "one of " + ", ".join(repr(a) for a in allowed), v)
        return check_literal
    if origin in (typing.Union, types.UnionType):
        options = [_checker(a) for a in args]
        names = " or ".join(getattr(a, "__name__", str(a)) for a in args)

        def check_union(v: Any, p: str) -> Any:
            for option in options:
                try:
                    return option(v, p)
                except SchemaError:
                    continue
            raise _fail(p, names.replace("NoneType", "null"), v)
        return check_union
    if origin in (tuple, list) and (origin is list or (len(args) == 2 and args[1] is ...)):
        item = _checker(args[0])
        make = tuple if origin is tuple else list

        def check_seq(v: Any, p: str) -> Any:
            if not isinstance(v, list):
                raise _fail(p, "an array", v)
            return make(item(x, f"{p}[{i}]") for i, x in enumerate(v))
        return check_seq
    if origin is dict and args[0] is str:
        value = _checker(args[1])

        def check_dict(v: Any, p: str) -> dict[str, Any]:
            if not isinstance(v, dict):
                raise _fail(p, "an object", v)
            return {k: value(x, f"{p}.{k}" if p else k) for k, x in v.items()}
        return check_dict
    raise TypeError(f"no schema check for {tp!r}")  # a bug in a schema, not in a file


def _same(value: Any) -> Any:
    return value


def _dataclass(cls: type[Any]) -> Check:
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default: Callable[[], Any] | None = functools.partial(_same, f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory
        else:
            default = None
        fields.append((f.name, _checker(hints[f.name]), default))

    def check_dataclass(v: Any, p: str) -> Any:
        if not isinstance(v, dict):
            raise _fail(p, "an object", v)
        kwargs = {}
        for name, check, default in fields:
            where = f"{p}.{name}" if p else name
            if name in v:
                kwargs[name] = check(v[name], where)
            elif default is not None:
                kwargs[name] = default()
            else:
                raise SchemaError(f"{where}: missing")
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:  # the rules of __post_init__
            raise SchemaError(f"{_where(p)}{exc}") from exc
    return check_dataclass
