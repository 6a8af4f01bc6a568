"""`crawlguard up`: everything for one rig: exporter, sidecar, alert evaluation, supervisor."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from crawlguard.cli.lifecycle import shutdown_on_signals
from crawlguard.kernel import envfile
from crawlguard.kernel.errors import ConfigError
from crawlguard.kernel.settings import Settings
from crawlguard.rig.promstack import ALERT_PATHS, AmTiming
from crawlguard.rig.up import RigConfig, RunningRig, with_state_dir

from . import HELP, warn_unknown_knobs
from .run import EPILOG, add_run_arguments, command_of, say_resume


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "up", help=HELP["up"],
        description="Start the exporter, the sidecar (with a random bearer token unless "
                    "HELIX_BFM_SIDECAR_TOKEN is set), the alert evaluation and the supervisor, "
                    "run CMD once per shard like 'crawlguard run', show live progress, and "
                    "shut everything down at the end or on Ctrl-C. The state dir keeps what "
                    "a later 'up' needs to resume. The sidecar listens on 127.0.0.1:9848 "
                    "(HELIX_BFM_SIDECAR_PORT) when that is free, else on a free port; at "
                    "start 'up' prints its URL and token file, and on Ctrl+C the one command "
                    "that resumes. Every client command "
                    "(status, rung, pause, resume, env, report, doctor, drill) run with the "
                    "same state dir finds this 'up' through <state>/run/up.json.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_up_arguments(p)
    add_run_arguments(p)
    p.set_defaults(func=main)


def add_up_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, help="default HELIX_BFM_STATE_DIR or .crawlguard")
    p.add_argument("--env-file", type=Path, metavar="FILE",
                   help="KEY=VALUE lines of knobs that win over the environment (relative "
                        "*_FILE paths are taken from FILE's folder), e.g. a fleet rig's "
                        "DIR/rigs/NAME/crawlguard.env from 'crawlguard fleet generate'")
    p.add_argument("--alert-path", choices=ALERT_PATHS, default="auto",
                   help="prometheus: real Prometheus + Alertmanager configured from deploy/; "
                        "embedded: the same rules evaluated in-process; external: none here, "
                        "alerts come from a fleet's central Alertmanager, and the exporter and "
                        "sidecar listen on HELIX_BFM_EXPORTER_HOST/_SIDECAR_HOST with TLS; "
                        "auto (default): prometheus when both binaries are on PATH")
    p.add_argument("--interval", type=float, metavar="SECONDS",
                   help="scrape/evaluation interval (default: the shipped 5s)")
    p.add_argument("--simulate-gpu", action="store_true",
                   help="serve a simulated GPU for the reference rebuild (crawlguard.refbuild) "
                        "instead of HELIX_BFM_VRAM_SOURCE")
    p.add_argument("--blind", action="store_true",
                   help="start even when no source of spill evidence works (no NVML, no "
                        "HELIX_BFM_VRAM_SOURCE=file:PATH, no HELIX_BFM_SHARED_SOURCE): no crawl "
                        "is then confirmed or fixed. Without it 'up' refuses such a rig")
    p.add_argument("--progress", choices=("auto", "tty", "lines", "off"), default="auto",
                   help="live progress on stderr, one row per shard in 80 columns: redrawn "
                        "on a terminal, periodic lines stamped with the time otherwise (auto); "
                        "off still prints the sidecar URL, the token file and, on Ctrl+C, the "
                        "command that resumes")
    p.add_argument("--log-file", type=Path, metavar="FILE",
                   help="also append the progress and event lines to FILE (instead of piping "
                        "the output, which on Windows makes Ctrl+C kill only this process)")


def interval_timing(interval: float | None) -> AmTiming | None:
    """Alertmanager timings scaled to a shortened interval; None keeps the shipped ones."""
    return None if interval is None else AmTiming.scaled_to(interval)


def main(args: argparse.Namespace) -> int:
    if args.interval is not None and not args.interval > 0:
        raise ConfigError("--interval", args.interval, "must be > 0")
    env = dict(os.environ)
    if args.env_file is not None:
        env = envfile.overlay(env, envfile.read(args.env_file))
    warn_unknown_knobs("up", env)
    settings = with_state_dir(Settings.from_env(env), args.state_dir)
    config = RigConfig(
        shards=tuple(args.shard), command=command_of(args), settings=settings,
        env=env, alert_path=args.alert_path, interval=args.interval,
        am_timing=interval_timing(args.interval), simulate_gpu=args.simulate_gpu,
        progress=args.progress, log_file=args.log_file, blind=args.blind)
    with shutdown_on_signals(hangup=True) as stop:
        rc = RunningRig(config, sys.stderr).run(stop)
    if stop.is_set():
        say_resume(args, resume_options(args, settings.state_dir))
    return rc


def resume_options(args: argparse.Namespace, state_dir: Path) -> list[str]:
    """``up``'s options as given, with the state dir made explicit: every path absolute,
    so that the line resumes from any directory."""
    words = ["--state-dir", str(state_dir.resolve())]
    for flag, value in (("--env-file", args.env_file), ("--log-file", args.log_file)):
        if value is not None:
            words += [flag, str(Path(value).resolve())]
    if args.alert_path != "auto":
        words += ["--alert-path", args.alert_path]
    if args.interval is not None:
        words += ["--interval", f"{args.interval:g}"]
    words += [flag for flag, on in (("--simulate-gpu", args.simulate_gpu),
                                    ("--blind", args.blind)) if on]
    if args.progress != "auto":
        words += ["--progress", args.progress]
    return words
