"""`crawlguard sidecar`: the remediation webhook and API (FastAPI)."""

from __future__ import annotations

import argparse
from typing import Any

from ._stub import not_yet


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    p = sub.add_parser("sidecar", help="the remediation webhook and API (FastAPI)")
    p.set_defaults(func=not_yet)
