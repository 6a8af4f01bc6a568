"""`crawlguard exporter`: the per-host /metrics endpoint."""

from __future__ import annotations

import argparse
import os
from typing import Any

from crawlguard.cli.lifecycle import shutdown_on_signals, wait_for_stop
from crawlguard.exporter.server import Exporter, ExporterConfig
from crawlguard.kernel.settings import Settings, port_flag

from . import HELP, warn_unknown_knobs


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "exporter", help=HELP["exporter"],
        description="Serve /metrics for Prometheus: the worker series of every shard "
                    "(from HELIX_BFM_STATE_DIR/metrics, surviving worker restarts; a dead "
                    "worker's gauges are dropped) plus bfm_vram_* per GPU from "
                    "HELIX_BFM_VRAM_SOURCE (nvml or file:PATH). Beyond loopback it needs TLS "
                    "(HELIX_BFM_TLS_CERT_FILE, _KEY_FILE; _CA_FILE for client certificates) "
                    "and HELIX_BFM_EXPORTER_TOKEN(_FILE).")
    p.add_argument("--host", help="address to bind (default HELIX_BFM_EXPORTER_HOST or "
                                  "127.0.0.1); non-loopback addresses need TLS and a token")
    p.add_argument("--port", type=int, help="port (default HELIX_BFM_EXPORTER_PORT or 9847; "
                                            "0 picks a free one)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    warn_unknown_knobs("exporter", os.environ)
    config = ExporterConfig.from_settings(Settings.from_env(), host=args.host,
                                          port=port_flag("--port", args.port))
    exporter = Exporter(config)
    with shutdown_on_signals() as stop:
        exporter.start()
        # Tests and supervisors read this line to learn the bound port.
        print(f"crawlguard exporter listening on {config.scheme}://{config.host}:"
              f"{exporter.port}/metrics", flush=True)
        try:
            wait_for_stop(stop)
        finally:
            exporter.stop()
    return 0
