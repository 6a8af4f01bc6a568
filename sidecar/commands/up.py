"""`crawlguard up`: everything for one rig: exporter, sidecar, alert evaluation, supervisor."""

from __future__ import annotations

import argparse
from typing import Any

from ._stub import not_yet


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    p = sub.add_parser("up", help="everything for one rig: exporter, sidecar, alert evaluation, supervisor")
    p.set_defaults(func=not_yet)
