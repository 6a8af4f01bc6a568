"""`crawlguard drill SHARD [--json] [--timeout SECONDS] [--keep]`: a fire drill.

Exit 0 when the ladder acted, 1 when it did not within the timeout (or answered
without a rung), 2 when the drill could not start (no running worker for the shard,
a sidecar that cannot act); 130 when interrupted. ``crawlguard.drill`` does the work.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from crawlguard.cli.lifecycle import shutdown_on_signals
from crawlguard.kernel.discovery import HELP as FINDING
from crawlguard.kernel.errors import ConfigError

from . import HELP

INTERRUPTED = 130


def register(sub: argparse._SubParsersAction[Any]) -> None:
    from crawlguard.drill.run import DEFAULT_TIMEOUT_S

    p = sub.add_parser(
        "drill", help=HELP["drill"],
        description="Rehearse a crawl on your own running rig and build: SHARD's live worker "
                    "is slowed from outside (stopped and resumed on a duty cycle, twice its "
                    "crawl factor slower) and spill evidence is reported for its pid alone, "
                    "until the ladder acts. Then it prints what happened, in seconds since the "
                    "slowdown began: detection (which batch), the alert, the rung, the "
                    "relaunch and the restart's verification. The restart is real; the crawl "
                    "is not counted and the shard stays on its device, unless --keep. Exit 0 "
                    "when the ladder acted, 1 when it did not within the timeout, 2 when the "
                    "drill could not start (no running worker for SHARD). " + FINDING)
    p.add_argument("shard")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: shard, acted, rung, onset_to_alert_s, "
                        "onset_to_signal_s, detected_after_batches, alert_path (null: did "
                        "not happen)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help=f"give up after this long (default {DEFAULT_TIMEOUT_S:g}: about ten "
                        "slowed batches of 4 s before the alert; raise it for longer "
                        "batches)")
    p.add_argument("--keep", action="store_true",
                   help="count the drill's crawl as a real one: the ladder moves (a first "
                        "crawl restarts, a second demotes the shard to CPU)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from crawlguard.drill.run import DrillConfig, run_drill

    if not args.timeout > 0:
        raise ConfigError("--timeout", args.timeout, "must be > 0")

    def say(text: str) -> None:
        print(f"crawlguard drill: {text}", file=sys.stderr, flush=True)

    with shutdown_on_signals() as stop:
        report = run_drill(DrillConfig(args.shard, args.timeout, args.keep), stop, say)
        interrupted = stop.is_set()
    if args.json:
        print(json.dumps(report.as_json(), sort_keys=True))
    else:
        verdict = "the ladder acted" if report.acted else "the ladder did not act"
        print(f"drill of shard {report.shard} ({report.alert_path} alert path): {verdict}")
        for line in report.lines():
            print(line)
    if report.acted:
        return 0
    return INTERRUPTED if interrupted else 1
