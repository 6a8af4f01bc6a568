"""Subcommands of ``crawlguard``; each module has ``register(subparsers)``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from . import clients, demo, doctor, env, exporter, report, run, serve, up

Register = Callable[["argparse._SubParsersAction[Any]"], None]

COMMANDS: list[Register] = [
    exporter.register,
    serve.register,
    run.register,
    up.register,
    clients.register,
    env.register,
    demo.register,
    report.register,
    doctor.register,
]
