"""Placeholder for subcommands whose issue has not landed yet."""

from __future__ import annotations

import argparse
import sys


def not_yet(args: argparse.Namespace) -> int:
    print(f"crawlguard {args.command}: not yet implemented", file=sys.stderr)
    return 2
