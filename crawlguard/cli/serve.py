"""`crawlguard sidecar`: the remediation webhook and API (FastAPI on uvicorn)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from typing import Any

from crawlguard.cli.lifecycle import shutdown_on_signals, wait_for_stop
from crawlguard.gpu.shared import shared_source_from_spec
from crawlguard.kernel import longpaths
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.settings import ACTIONS, Settings, port_flag, state_dir_established
from crawlguard.kernel.statedir import StateDir
from crawlguard.sidecar.engine import Engine
from crawlguard.sidecar.ladder import Pending
from crawlguard.sidecar.server import SidecarServer
from crawlguard.sidecar.verify import VerificationCollector, Verifier

from . import HELP, warn_unknown_knobs

CRASH_HOOK = "HELIX_BFM_TEST_CRASH_AFTER_DECIDE"
"""Test hook, not a knob: when "1" the sidecar exits (os._exit, like SIGKILL) right
after it has persisted a rung and before it signals anyone, to prove crash safety."""

log = get_logger(__name__)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "sidecar", help=HELP["sidecar"],
        description="Serve the Alertmanager webhook (POST /v1/alerts) and the ladder API. "
                    "Every /v1 endpoint demands 'Authorization: Bearer "
                    f"$HELIX_BFM_SIDECAR_TOKEN'. Rungs follow HELIX_BFM_CRAWL_ACTION "
                    f"({'|'.join(ACTIONS)}); state lives in HELIX_BFM_STATE_DIR. Beyond "
                    "loopback it needs TLS too (HELIX_BFM_TLS_CERT_FILE, _KEY_FILE; _CA_FILE "
                    "demands client certificates of that CA).")
    p.add_argument("--host", help="address to bind (default HELIX_BFM_SIDECAR_HOST or "
                                  "127.0.0.1); non-loopback addresses need TLS and a token")
    p.add_argument("--port", type=int, help="port (default HELIX_BFM_SIDECAR_PORT or 9848; "
                                            "0 picks a free one)")
    p.add_argument("--insecure-no-token", action="store_true",
                   help="serve /v1 without authentication (loopback only)")
    p.set_defaults(func=main)


def _crash(shard: str, pending: Pending) -> None:
    log.warning("%s=1: exiting after persisting rung %s of shard %s", CRASH_HOOK, pending.id,
                shard)
    logging.shutdown()
    os._exit(70)


def main(args: argparse.Namespace) -> int:
    warn_unknown_knobs("sidecar", os.environ)
    settings = Settings.from_env()
    args.port = port_flag("--port", args.port)
    ep = settings.endpoints
    if args.host is not None or args.port is not None:
        ep = dataclasses.replace(ep, sidecar_host=args.host or ep.sidecar_host,
                                 sidecar_port=ep.sidecar_port if args.port is None else args.port)
    note = longpaths.check_state_dir(settings.state_dir)
    if note:
        log.warning("%s", note)
    hook = _crash if os.environ.get(CRASH_HOOK) == "1" else None
    # A sidecar `up` (re)started never makes a vanished state dir afresh.
    state = StateDir(settings.state_dir, create=not state_dir_established())
    engine = Engine(state, settings.remediation, after_decide=hook)
    server = SidecarServer(engine, ep.sidecar_host, ep.sidecar_port, ep.token,
                           insecure_no_token=args.insecure_no_token, tls=ep.tls,
                           allow_plaintext=ep.allow_plaintext, header_timeout=ep.header_timeout)
    verifier = Verifier(engine.store, settings.detection,
                        shared_source_from_spec(settings.shared_source))
    engine.metrics.registry.register(VerificationCollector(engine.store))
    with shutdown_on_signals() as stop:
        bound = server.start()
        verifier.start_thread(stop)
        try:
            # Tests, `crawlguard up` and people read this line to learn the bound port.
            print(f"crawlguard sidecar listening on {bound.url}", flush=True)
            log.info("action=%s state_dir=%s auth=%s", engine.mode, settings.state_dir,
                     "bearer" if ep.token else "NONE (--insecure-no-token)")
            wait_for_stop(stop)
        finally:
            server.stop()
    return 0
