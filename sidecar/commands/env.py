"""`crawlguard env`: print a shard's resume overrides."""

from __future__ import annotations

import argparse
from typing import Any

from ._stub import not_yet


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    p = sub.add_parser("env", help="print a shard's resume overrides")
    p.set_defaults(func=not_yet)
