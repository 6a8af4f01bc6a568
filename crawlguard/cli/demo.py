"""`crawlguard demo`: run 'up' on the reference rebuild (two incidents, one healthy shard)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from crawlguard.cli.lifecycle import shutdown_on_signals
from crawlguard.kernel.errors import ConfigError
from crawlguard.rig.demo import remove, render, run_demo, temp_root
from crawlguard.rig.promstack import ALERT_PATHS

from . import HELP


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "demo", help=HELP["demo"],
        description="Rebuild three shards of the reference rebuild on a simulated 12 GB GPU "
                    "with every part of crawlguard: 'confluence' decays like incident 1, "
                    "'slack__eng-oncall' collapses like incident 2 and again after its "
                    "restart, 'jira' is healthy. Ends with a summary per shard and the "
                    "lossless verdict. Exit 0 only when every shard finished lossless.")
    p.add_argument("--json", action="store_true",
                   help="print exactly one JSON object on stdout (progress stays on stderr)")
    p.add_argument("--state-dir", type=Path,
                   help="keep the state here (default: a fresh temporary dir, removed after)")
    p.add_argument("--alert-path", choices=ALERT_PATHS, default="auto",
                   help="auto (default): real Prometheus + Alertmanager when installed, "
                        "else the embedded evaluation")
    p.add_argument("--progress", choices=("auto", "tty", "lines", "off"), default="auto")
    p.add_argument("--time-scale", type=float, default=10.0,
                   help="how much faster than the incidents simulated time runs (default 10)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if not args.time_scale > 0:  # like `up --interval`: the command line says it, exit 2
        raise ConfigError("--time-scale", args.time_scale, "must be > 0")
    root = args.state_dir.resolve() if args.state_dir else temp_root()
    try:
        with shutdown_on_signals() as stop:
            result = run_demo(root, dict(os.environ), args.alert_path, stop, sys.stderr,
                              args.progress, args.time_scale)
    finally:
        if args.state_dir is None:
            remove(root)
    if args.json:
        print(json.dumps(result.contract(), sort_keys=True))
    else:
        print(render(result, root if args.state_dir else None))
    return result.exit_code
