"""A shard's resume overrides, readable by any supervisor loop (import-light).

The sidecar writes the overrides of a shard (e.g. ``BGEM3_DEVICE=cpu`` after
the CPU rung) into the ``env`` object of ``<state>/shards/<shard>/ladder.json``
by atomic replace. A build that has its own supervisor loop (instead of
``crawlguard run``) applies them before relaunching a worker::

    from crawlguard.sidecar.resume import resume_env
    env = {**os.environ, **resume_env(".crawlguard", "slack__eng-oncall")}
    subprocess.run(cmd, env=env)

This module imports the standard library, a few kernel modules
(``crawlguard.kernel.names``, ``statedir``, ``formats.ladderfile``) and, through
``ladderfile``, pydantic: the file has one schema, and resume validates the
whole file against it with the very reader the sidecar's own ``LadderStore``
uses, so the two never disagree about a file. Nothing heavier (no server, HTTP
client, metrics, psutil or YAML: a contract in pyproject.toml), and
``sidecar/__init__.py`` is kept empty of imports; it works while the sidecar is
down. Bad state is an error, never a silent empty environment: relaunching a
demoted shard on the GPU would bring the crawl back.
"""

from __future__ import annotations

import os
from pathlib import Path

from crawlguard.kernel.errors import ResumeEnvError, StateError
from crawlguard.kernel.formats import ladderfile
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.statedir import StateDir

__all__ = ["ladder_path", "resume_env"]


def ladder_path(state_dir: str | os.PathLike[str], shard: str) -> Path:
    """``UnsafeNameError`` (a ``ValueError``) when ``shard`` may not be a path component."""
    return StateDir(state_dir).ladder_file(ShardName.parse(shard))


def resume_env(state_dir: str | os.PathLike[str], shard: str) -> dict[str, str]:
    """The overrides for ``shard``; empty when the sidecar never touched it.

    ``ResumeEnvError`` (a ``StateError``) when the ladder cannot be read or is
    not one crawlguard wrote.
    """
    path = ladder_path(state_dir, shard)
    try:
        doc = ladderfile.read(path)
    except StateError as exc:
        raise ResumeEnvError(f"cannot read the resume environment of shard {shard!r}: "
                             f"{exc}") from exc
    return {} if doc is None else dict(doc.env)
