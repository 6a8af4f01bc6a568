"""`crawlguard demo`: run 'up' on the reference rebuild (two incidents, one healthy shard)."""

from __future__ import annotations

import argparse
from typing import Any

from ._stub import not_yet


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    p = sub.add_parser("demo", help="run 'up' on the reference rebuild (two incidents, one healthy shard)")
    p.set_defaults(func=not_yet)
