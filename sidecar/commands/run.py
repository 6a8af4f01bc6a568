"""`crawlguard run`: the supervisor: run CMD once per shard, relaunching after rungs and crashes."""

from __future__ import annotations

import argparse
from typing import Any

from ._stub import not_yet


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    p = sub.add_parser("run", help="the supervisor: run CMD once per shard, relaunching after rungs and crashes")
    p.set_defaults(func=not_yet)
