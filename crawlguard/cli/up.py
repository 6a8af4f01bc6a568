"""`crawlguard up`: everything for one rig: exporter, sidecar, alert evaluation, supervisor."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from crawlguard.cli.lifecycle import shutdown_on_signals
from crawlguard.kernel.errors import ConfigError
from crawlguard.kernel.settings import Settings
from crawlguard.rig.promstack import ALERT_PATHS, AmTiming
from crawlguard.rig.up import RigConfig, RunningRig, with_state_dir

from . import HELP
from .run import EPILOG, add_run_arguments, command_of


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "up", help=HELP["up"],
        description="Start the exporter, the sidecar (with a random bearer token unless "
                    "HELIX_BFM_SIDECAR_TOKEN is set), the alert evaluation and the supervisor, "
                    "run CMD once per shard like 'crawlguard run', show live progress, and "
                    "shut everything down at the end or on Ctrl-C. The state dir keeps what "
                    "a later 'up' needs to resume.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_up_arguments(p)
    add_run_arguments(p)
    p.set_defaults(func=main)


def add_up_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, help="default HELIX_BFM_STATE_DIR or .crawlguard")
    p.add_argument("--alert-path", choices=ALERT_PATHS, default="auto",
                   help="prometheus: real Prometheus + Alertmanager configured from deploy/; "
                        "embedded: the same rules evaluated in-process; auto (default): "
                        "prometheus when both binaries are on PATH")
    p.add_argument("--interval", type=float, metavar="SECONDS",
                   help="scrape/evaluation interval (default: the shipped 5s)")
    p.add_argument("--simulate-gpu", action="store_true",
                   help="serve a simulated GPU for the reference rebuild (crawlguard.refbuild) "
                        "instead of HELIX_BFM_VRAM_SOURCE")
    p.add_argument("--progress", choices=("auto", "tty", "lines", "off"), default="auto",
                   help="live progress on stderr: redrawn lines on a terminal, periodic "
                        "lines otherwise (auto)")
    p.add_argument("--log-file", type=Path, metavar="FILE",
                   help="also append the progress and event lines to FILE (instead of piping "
                        "the output, which on Windows makes Ctrl+C kill only this process)")


def interval_timing(interval: float | None) -> AmTiming | None:
    """Alertmanager timings scaled to a shortened interval; None keeps the shipped ones."""
    if interval is None:
        return None
    return AmTiming(group_wait=interval, group_interval=2 * interval,
                    repeat_interval=max(10.0, 20 * interval))


def main(args: argparse.Namespace) -> int:
    if args.interval is not None and not args.interval > 0:
        raise ConfigError("--interval", args.interval, "must be > 0")
    settings = with_state_dir(Settings.from_env(), args.state_dir)
    config = RigConfig(
        shards=tuple(args.shard), command=command_of(args), settings=settings,
        env=dict(os.environ), alert_path=args.alert_path, interval=args.interval,
        am_timing=interval_timing(args.interval), simulate_gpu=args.simulate_gpu,
        progress=args.progress, log_file=args.log_file)
    with shutdown_on_signals(hangup=True) as stop:
        return RunningRig(config, sys.stderr).run(stop)
