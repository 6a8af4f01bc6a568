"""`crawlguard rung` and `crawlguard status`: clients of the sidecar API."""

from __future__ import annotations

import argparse
from typing import Any

from ._stub import not_yet


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    p = sub.add_parser("rung", help="force a rung on a shard through the sidecar")
    p.set_defaults(func=not_yet)
    p = sub.add_parser("status", help="show the ladder of every shard")
    p.set_defaults(func=not_yet)
