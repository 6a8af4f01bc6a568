"""`crawlguard run`: the supervisor: run CMD once per shard, relaunching after rungs and crashes."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from crawlguard.cli.lifecycle import shutdown_on_signals
from crawlguard.gpu.vram import source_from_spec
from crawlguard.kernel import longpaths
from crawlguard.kernel.errors import ConfigError
from crawlguard.kernel.settings import Settings
from crawlguard.kernel.statedir import StateDir
from crawlguard.supervisor.loop import Supervisor, SupervisorConfig, SupervisorEvent

from . import HELP, warn_unknown_knobs

EPILOG = """\
exit status: 0 every shard complete; 2 bad knob, flag or state; 3 a shard was
relaunched HELIX_BFM_MAX_FUTILE_RESTARTS times in a row without a single new
gene (the supervisor gave up; finished work is kept); 4 the state dir
vanished or was replaced mid-run (the workers were stopped; do not restart
into an empty one: put it back or start on the new one); 130 stopped by
SIGINT/SIGTERM (the worker got the graceful signal first).
"""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "run", help=HELP["run"],
        description="Run CMD once per shard, in order, with HELIX_BFM_SHARD set and {shard} in "
                    "CMD replaced (no shell), each worker in its own process group with the "
                    "shard's resume overrides in its environment. Exit 0 ends a shard; any "
                    "other end (a rung, a crash) relaunches it once its GPU memory is released.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--log-dir", type=Path,
                   help="append each shard's worker output to DIR/<shard>.log "
                        "(default: inherit this terminal)")
    p.add_argument("--log-file", type=Path, metavar="FILE",
                   help="also append the supervisor's event lines to FILE (instead of piping "
                        "the output, which on Windows makes Ctrl+C kill only this process)")
    p.set_defaults(func=main)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """--shard and CMD, shared with `crawlguard up`."""
    p.add_argument("--shard", action="append", required=True, metavar="NAME",
                   help="a shard to run (repeat for several; they run in this order)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...",
                   help="the worker command; {shard} is replaced by the shard's name")


def command_of(args: argparse.Namespace) -> tuple[str, ...]:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ConfigError("CMD", "", "give the worker command after '--'")
    return tuple(cmd)


def resume_words(args: argparse.Namespace, options: list[str]) -> list[str]:
    """The command line that carries on where a stopped ``args.command`` left off: the
    same shards and CMD, with ``options`` (what differs from the defaults, paths absolute)."""
    shards = [word for s in args.shard for word in ("--shard", s)]
    return ["crawlguard", args.command, *options, *shards, "--", *command_of(args)]


def say_resume(args: argparse.Namespace, options: list[str], note: str = "") -> None:
    """After a Ctrl+C (or SIGTERM): the one command that resumes, last on stderr."""
    words = resume_words(args, options)
    line = subprocess.list2cmdline(words) if sys.platform == "win32" else shlex.join(words)
    print(f"crawlguard {args.command}: stopped; finished work is kept. To resume: {line}{note}",
          file=sys.stderr, flush=True)


def _abs(path: Path | None) -> str | None:
    return None if path is None else str(path.resolve())


def print_event(prefix: str, copy: TextIO | None = None) -> Any:
    def sink(event: SupervisorEvent) -> None:
        where = "" if event.shard == "*" else f"[{event.shard}] "
        print(f"crawlguard {prefix}: {where}{event.message}", file=sys.stderr, flush=True)
        if copy is not None:
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {where}{event.message}", file=copy,
                  flush=True)

    return sink


def main(args: argparse.Namespace) -> int:
    warn_unknown_knobs("run", os.environ)
    settings = Settings.from_env()
    config = SupervisorConfig(shards=tuple(args.shard), command=command_of(args),
                              state_dir=settings.state_dir, remediation=settings.remediation,
                              log_dir=args.log_dir)
    StateDir(settings.state_dir).open_for_service()
    note = longpaths.check_state_dir(settings.state_dir)
    if note:
        print(f"crawlguard run: warning: {note}", file=sys.stderr, flush=True)
    source = source_from_spec(settings.vram_source)
    with contextlib.ExitStack() as stack:
        copy = None
        if args.log_file is not None:
            try:
                copy = stack.enter_context(open(args.log_file, "a", encoding="utf-8"))
            except OSError as exc:
                raise ConfigError("--log-file", str(args.log_file),
                                  f"cannot open: {exc.strerror or exc}") from exc
        supervisor = Supervisor(config, source=source, on_event=print_event("run", copy))
        with shutdown_on_signals(hangup=True) as stop:
            try:
                rc = supervisor.run(stop)
            finally:
                close = getattr(source, "close", None)
                if callable(close):
                    close()
    if stop.is_set():
        options = [word for flag, value in (("--log-dir", _abs(args.log_dir)),
                                            ("--log-file", _abs(args.log_file)))
                   if value for word in (flag, value)]
        say_resume(args, options, f" (state dir {settings.state_dir.resolve()}, from "
                                  "HELIX_BFM_STATE_DIR or ./.crawlguard: run it where that holds)")
    return rc
