"""`crawlguard doctor [--json]`: a pre-flight of the rig.

Each check prints ok, warn, fail or skip (it does not apply here) with one line of
advice (crawlguard/doctor/); the exit status is 0 unless a check fails (then 1).
It only looks: it creates no file and no folder, the state dir included.
Prometheus, Alertmanager and windows_exporter are checked when their URLs are given
(flags or HELIX_BFM_PROMETHEUS_URL / _ALERTMANAGER_URL / _WINDOWS_EXPORTER_URL). Beside a
running ``crawlguard up`` on the state dir, its sidecar, Prometheus, Alertmanager
and VRAM sources are the ones checked, unless knobs or flags name others
(``crawlguard.kernel.discovery``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from crawlguard.doctor.checks import CheckInputs, render, run_checks, verdict
from crawlguard.kernel.discovery import rig_env
from crawlguard.kernel.settings import Preflight, Settings

from . import HELP


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "doctor", help=HELP["doctor"],
        description="Check the rig before a rebuild: misspelled HELIX_BFM_* knobs, the "
                    "driver and its sysmem fallback, PYTORCH_CUDA_ALLOC_CONF, the GPU's size "
                    "against the CPU-backfill knob, NVML, the shared-memory source and "
                    "whether any spill evidence can be read at all, Prometheus (every "
                    "shipped rule loaded) and Alertmanager (every alert routed: the "
                    "sidecar's to its webhook) when given, the sidecar and its token, the "
                    "state dir and its mode. Each check says ok, warn, fail or skip (does "
                    "not apply here); exit 0 unless a check fails. It creates nothing. "
                    "Beside a running 'crawlguard up' on the state dir "
                    "(HELIX_BFM_STATE_DIR, default .crawlguard) the parts checked are that "
                    "up's, found through its run/up.json: sidecar, token, Prometheus, "
                    "Alertmanager, VRAM sources. Flags and knobs that are set win over what "
                    "is found.")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--prometheus", metavar="URL", help="Prometheus to check (default "
                   "HELIX_BFM_PROMETHEUS_URL, else the running up's; neither: skipped)")
    p.add_argument("--alertmanager", metavar="URL", help="Alertmanager to check (default "
                   "HELIX_BFM_ALERTMANAGER_URL, else the running up's; neither: skipped)")
    p.add_argument("--windows-exporter", metavar="URL", help="windows_exporter to check for "
                   "the gpu collector (default HELIX_BFM_WINDOWS_EXPORTER_URL)")
    p.set_defaults(func=main)



def main(args: argparse.Namespace) -> int:
    env = rig_env().env
    settings = Settings.from_env(env)
    pre = Preflight.from_env(env)
    pre = dataclasses.replace(
        pre, prometheus_url=(args.prometheus or pre.prometheus_url or "").rstrip("/") or None,
        alertmanager_url=(args.alertmanager or pre.alertmanager_url or "").rstrip("/") or None,
        windows_exporter_url=(args.windows_exporter or pre.windows_exporter_url or ""
                              ).rstrip("/") or None)
    checks = run_checks(CheckInputs(settings, pre, env=env))
    failed = any(c.status == "fail" for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [c.as_json() for c in checks]},
                         indent=2))
    else:
        render(checks, sys.stdout)
        print(f"doctor: {verdict(checks)}")
    return 1 if failed else 0
