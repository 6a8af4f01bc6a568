"""`crawlguard env`: print a shard's resume overrides, straight from the state dir.

It reads ``shards/<shard>/ladder.json`` through ``crawlguard.sidecar.resume`` (what every
supervisor loop uses), so it works while the sidecar is down. Formats:

- ``env`` (default): ``KEY=VALUE`` lines, for ``env $(crawlguard env S) cmd``;
- ``sh``: ``export KEY='VALUE'`` with shlex quoting, for ``eval "$(...)"``;
- ``powershell``: ``$env:KEY = 'VALUE'`` ('' escapes a quote), for
  ``crawlguard env S --format powershell | Invoke-Expression``;
- ``json``: one object.
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

from crawlguard.kernel.errors import UnknownShardError
from crawlguard.kernel.names import ShardName
from crawlguard.kernel.settings import Detection, state_dir_from_env
from crawlguard.kernel.statedir import StateDir
from crawlguard.sidecar.resume import resume_env

from . import HELP

FORMATS = ("env", "sh", "powershell", "json")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "env", help=HELP["env"],
        description="Print the resume overrides of SHARD (e.g. BGEM3_DEVICE=cpu after the CPU "
                    "rung) from HELIX_BFM_STATE_DIR; works while the sidecar is down. Prints "
                    "nothing when the shard has none; a shard the state dir does not know "
                    "(no ladder, no registered worker) is an error (exit 2).")
    p.add_argument("shard")
    p.add_argument("--format", choices=FORMATS, default="env",
                   help="env: KEY=VALUE lines (default); sh: export lines; powershell: "
                        "$env: assignments; json: one object")
    p.set_defaults(func=main)


def render(env: dict[str, str], fmt: str) -> str:
    items = sorted(env.items())
    if fmt == "json":
        return json.dumps(dict(items), sort_keys=True)
    if fmt == "sh":
        lines = [f"export {k}={shlex.quote(v)}" for k, v in items]
    elif fmt == "powershell":
        lines = ["$env:{} = '{}'".format(k, v.replace("'", "''")) for k, v in items]
    else:
        lines = [f"{k}={v}" for k, v in items]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    Detection.from_env()  # a bad knob in this shell would break the worker it prepares
    shard = ShardName.parse(args.shard)
    root = state_dir_from_env()
    if not StateDir(root).knows(shard):
        # Printing nothing would read as "runs on GPU" for a typo.
        raise UnknownShardError(shard, root)
    # A ResumeEnvError is a CrawlguardError: the command line prints it, exit 2.
    env = resume_env(root, shard)
    text = render(env, args.format)
    if text:
        print(text)
    return 0
