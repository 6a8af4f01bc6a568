"""A shard's resume overrides, readable by any supervisor loop (import-light).

The sidecar writes the overrides of a shard (e.g. ``BGEM3_DEVICE=cpu`` after
the CPU rung) into the ``env`` object of ``<state>/shards/<shard>/ladder.json``
by atomic replace. A build that has its own supervisor loop (instead of
``crawlguard run``) applies them before relaunching a worker::

    from .resume import resume_env
    env = {**os.environ, **resume_env(".crawlguard", "slack__eng-oncall")}
    subprocess.run(cmd, env=env)

This module imports only the standard library (``sidecar/__init__.py`` is kept
empty of imports for the same reason), so it costs nothing to a build and
works while the sidecar is down. Bad state is an error, never a silent empty
environment: relaunching a demoted shard on the GPU would bring the crawl back.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ResumeEnvError(Exception):
    """The shard name is unsafe or its ladder file is unreadable or malformed."""


def ladder_path(state_dir: str | os.PathLike[str], shard: str) -> Path:
    if not _SAFE.match(shard) or ".." in shard:
        raise ResumeEnvError(f"shard {shard!r} is not a safe name")
    return Path(state_dir) / "shards" / shard / "ladder.json"


def resume_env(state_dir: str | os.PathLike[str], shard: str) -> dict[str, str]:
    """The overrides for ``shard``; empty when the sidecar never touched it."""
    path = ladder_path(state_dir, shard)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResumeEnvError(f"cannot read the resume environment in {path}: {exc}") from exc
    env = data.get("env", {}) if isinstance(data, dict) else None
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and _ENV_NAME.match(k) and isinstance(v, str)
            for k, v in env.items()):
        raise ResumeEnvError(f"{path}: 'env' must map variable names to strings")
    return dict(env)
