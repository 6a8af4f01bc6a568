"""`crawlguard report`: chart and summarise a rebuild from its state dir."""

from __future__ import annotations

import argparse
from typing import Any

from ._stub import not_yet


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    p = sub.add_parser("report", help="chart and summarise a rebuild from its state dir")
    p.set_defaults(func=not_yet)
