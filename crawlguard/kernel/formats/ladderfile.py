"""``shards/<shard>/ladder.json``: the sidecar's durable ladder of one shard.

The one writer is ``write`` (an atomic replace, called by ``crawlguard.sidecar.state``
while it holds ``StateDir.lock()``); the one reader is ``read``. The sidecar
maps the document to its ``ShardLadder`` (``sidecar/state.py`` draws the whole
schema); everyone else uses the header this module checks and types:

- ``schema``: the version, 1 (the first release wrote it too; absent reads as 1);
- ``crawls``: crawl episodes counted, a non-negative integer;
- ``rung``: the highest rung taken, a string (``none``, ``restart``, ``cpu``);
- ``env``: the shard's resume overrides, variable name -> string. What every
  supervisor loop applies before relaunching a worker (``crawlguard.sidecar.resume``);
- ``history``: entries, each an object with a string ``kind`` and a number ``at``.

A file that breaks any of these is ``CorruptStateError``: a resume
environment is never guessed, because relaunching a demoted shard on the GPU
would bring the crawl back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crawlguard.kernel.errors import CorruptStateError
from crawlguard.kernel.names import is_env_name
from crawlguard.kernel.statedir import read_json, write_json_atomic

from .jsonlines import finite_number, version_of

VERSION = 1
VERSION_KEY = "schema"


@dataclass(frozen=True)
class LadderDoc:
    """A ladder.json whose header was checked; ``data`` is the whole document."""

    version: int
    crawls: int
    rung: str
    env: Mapping[str, str]
    history: tuple[Mapping[str, Any], ...]
    data: Mapping[str, Any]


def parse(data: Any, where: str = "ladder.json") -> LadderDoc:
    """Check the header of a ladder document; ``CorruptStateError`` naming ``where``."""
    if not isinstance(data, dict):
        raise _corrupt(where, "not a JSON object")
    version = version_of(data, VERSION_KEY)
    if version is None or version > VERSION:
        raise _corrupt(where, f"unknown {VERSION_KEY} {data.get(VERSION_KEY)!r} "
                              f"(this crawlguard reads up to {VERSION})")
    env = data.get("env", {})
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and is_env_name(k) and isinstance(v, str)
            for k, v in env.items()):
        raise _corrupt(where, "'env' must map variable names to strings")
    crawls = data.get("crawls", 0)
    if isinstance(crawls, bool) or not isinstance(crawls, int) or crawls < 0:
        raise _corrupt(where, "'crawls' must be a non-negative integer")
    rung = data.get("rung", "none")
    if not isinstance(rung, str):
        raise _corrupt(where, "'rung' must be a string")
    history = data.get("history", [])
    if not isinstance(history, list) or not all(_is_entry(h) for h in history):
        raise _corrupt(where, "'history' must list objects with a 'kind' and a number 'at'")
    return LadderDoc(version=version, crawls=crawls, rung=rung, env=dict(env),
                     history=tuple(history), data=data)


def read(path: Path) -> LadderDoc | None:
    """The ladder in ``path``; ``None`` when the shard has none; ``CorruptStateError`` when bad."""
    data = read_json(path)
    return None if data is None else parse(data, str(path))


def write(path: Path, doc: Mapping[str, Any], durable: bool = True) -> None:
    """Replace ``path`` with ``doc`` stamped with this version (atomic; fsynced unless
    ``durable=False``, which leaves that to a later ``statedir.sync_file``)."""
    write_json_atomic(path, {**doc, VERSION_KEY: VERSION}, durable=durable)


def _is_entry(value: Any) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        return False
    return finite_number(value.get("at")) is not None


def _corrupt(where: str, why: str) -> CorruptStateError:
    return CorruptStateError(f"{where} is not a ladder crawlguard wrote ({why}); "
                             "fix or delete it to reset the shard")
