"""Subcommands of ``crawlguard``, one module each, imported only when chosen.

``COMMANDS`` names every subcommand, the module of this package whose
``register(subparsers)`` adds it, and the one line ``crawlguard --help`` shows
for it (the module passes ``help=HELP[name]``). Listing them here lets the
command line build its help without importing any command module, and import
only the chosen one: ``crawlguard env`` must not pay for FastAPI and uvicorn.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

Register = Callable[["argparse._SubParsersAction[Any]"], None]


class Command(NamedTuple):
    module: str
    help: str


COMMANDS: dict[str, Command] = {
    "exporter": Command("exporter", "serve the workers' metrics and VRAM per GPU on /metrics"),
    "sidecar": Command("serve", "the remediation webhook and API (FastAPI)"),
    "run": Command("run", "the supervisor: run CMD once per shard, relaunching after rungs "
                          "and crashes"),
    "up": Command("up", "everything for one rig: exporter, sidecar, alert evaluation, "
                        "supervisor"),
    "rung": Command("clients", "force a rung on a shard through the sidecar"),
    "status": Command("clients", "show the ladder of every shard (or one)"),
    "pause": Command("clients", "pause the sidecar's rungs (alerts are still recorded)"),
    "resume": Command("clients", "take rungs again after 'pause'"),
    "env": Command("env", "print a shard's resume overrides"),
    "demo": Command("demo", "run 'up' on the reference rebuild (two incidents, one healthy "
                            "shard)"),
    "report": Command("report", "chart and summarise a rebuild from its state dir"),
    "drill": Command("drill", "fire drill: make a shard's live worker crawl and watch the "
                              "ladder act"),
    "doctor": Command("doctor", "pre-flight of the rig: driver, allocator, VRAM, evidence, "
                                "alert path"),
    "fleet": Command("fleet", "a fleet of bare rigs: generate the central host's configs and "
                              "each rig's files; status and rungs of every rig"),
}

HELP: dict[str, str] = {name: command.help for name, command in COMMANDS.items()}


def load(name: str) -> Register:
    """The ``register`` function of the module that holds command ``name``."""
    module = importlib.import_module(f"{__name__}.{COMMANDS[name].module}")
    register: Register = module.register
    return register


def warn_unknown_knobs(command: str, env: Mapping[str, str]) -> None:
    """At the start of a command that starts something (up, run, sidecar, exporter): one
    line on stderr for each HELIX_BFM_* name that is no knob, with the closest one."""
    from crawlguard.kernel.settings import unknown_knob_lines

    for line in unknown_knob_lines(env):
        print(f"crawlguard {command}: warning: {line}", file=sys.stderr, flush=True)
