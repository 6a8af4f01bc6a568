"""`crawlguard fleet generate|status|rung`: a fleet of bare rigs, from the central host."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from crawlguard.fleet import fleetfile
from crawlguard.fleet.generate import generate
from crawlguard.fleet.status import FleetClient, open_fleet
from crawlguard.kernel import rungs

from . import HELP
from .clients import RUNG_CHOICES, table, take_rung


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "fleet", help=HELP["fleet"],
        description="Many rigs, one central Prometheus, Alertmanager and Grafana, over TLS. "
                    "'generate' writes every file from the fleet file; on each rig, "
                    "'crawlguard up --env-file DIR/rigs/NAME/crawlguard.env --alert-path "
                    "external ...' runs it; 'status' and 'rung' reach every rig from the "
                    "central host. docs/deploy.md, 'A fleet of bare rigs'.")
    fleet = p.add_subparsers(dest="fleet_command", metavar="SUBCOMMAND", required=True)
    g = fleet.add_parser(
        "generate", help="write the central configs, the dashboards, and each rig's env file, "
                         "token and certificate",
        description="Write DIR/central/ (prometheus.yml, alertmanager.yml, rules, Grafana "
                    "dashboards, the fleet CA's certificate, a client certificate, each rig's "
                    "token) and DIR/rigs/NAME/ (crawlguard.env, token, tls.crt, tls.key, "
                    "ca.crt) from FLEET_FILE. Running it again rewrites the configs and keeps "
                    "every key, certificate and token; one that no longer fits is refused "
                    "with the reason, never replaced silently (delete it to issue a new one).")
    g.add_argument("fleet_file", type=Path, metavar="FLEET_FILE")
    g.add_argument("--out", type=Path, required=True, metavar="DIR")
    g.set_defaults(func=run_generate)
    s = fleet.add_parser(
        "status", help="every rig's reachability, shards and ladders in one table",
        description="Ask every rig's sidecar (ladders) and exporter (reachability) with the "
                    "central host's credentials from DIR/central/. Exit 0 when every rig "
                    "answered, 1 when one did not.")
    s.add_argument("target", type=Path, metavar="FLEET_FILE_OR_DIR")
    s.add_argument("--out", type=Path, metavar="DIR",
                   help="with a FLEET_FILE: the folder 'fleet generate' wrote (default: the "
                        "fleet file's folder)")
    s.add_argument("--json", action="store_true", help="one JSON object")
    s.set_defaults(func=run_status)
    r = fleet.add_parser(
        "rung", help="force a rung on a shard of any rig",
        description="Like 'crawlguard rung', on RIG's sidecar, from the central host.")
    r.add_argument("rig", metavar="RIG")
    r.add_argument("shard", metavar="SHARD")
    r.add_argument("rung", choices=RUNG_CHOICES, metavar="RUNG", help=", ".join(RUNG_CHOICES))
    r.add_argument("--reason", default="", help="recorded in the shard's history")
    r.add_argument("--fleet", type=Path, default=Path("."), metavar="FLEET_FILE_OR_DIR",
                   help="the folder 'fleet generate' wrote, or the fleet file beside it "
                        "(default: the current directory)")
    r.set_defaults(func=run_rung)


def run_generate(args: argparse.Namespace) -> int:
    for line in generate(fleetfile.load(args.fleet_file), args.out):
        print(line)
    return 0


def run_status(args: argparse.Namespace) -> int:
    layout, rigs = open_fleet(args.target, args.out)
    found = FleetClient(layout).status_all(rigs)
    if args.json:
        print(json.dumps({"rigs": found, "reachable": sum(r["reachable"] for r in found),
                          "total": len(found)}, indent=2, sort_keys=True))
    else:
        print(render(found))
    return 0 if all(r["reachable"] for r in found) else 1


def _port(answer: dict[str, Any]) -> str:
    return "ok" if answer["ok"] else "DOWN"


def render(found: list[dict[str, Any]]) -> str:
    rows = [("RIG", "EXPORTER", "SIDECAR", "SHARD", "GENES", "DEVICE", "CRAWLS", "RUNG", "ENV",
             "IN PROGRESS")]
    problems = []
    for rig in found:
        head = (rig["rig"], _port(rig["exporter"]), _port(rig["sidecar"]))
        if rig["paused"]:
            problems.append(f"{rig['rig']}: paused (no rungs until 'crawlguard resume')")
        for part in ("exporter", "sidecar"):
            if not rig[part]["ok"]:
                problems.append(f"{rig['rig']}: {part} {rig[part]['url']}: {rig[part]['error']}")
        served: dict[str, Any] = rig["exporter"]["shards"]
        ladders = {s["shard"]: s for s in rig["shards"]}
        bad = {b["shard"] for b in rig["unreadable"]}
        names = sorted(set(served) | set(ladders) | bad)
        if not names:
            rows.append((*head, "-", "-", "-", "-", "-", "-", "-"))
        for name in names:
            genes = served.get(name, {})
            metrics = (str(genes["genes"]) if genes else "?", genes.get("device") or "-")
            if name in bad:
                rows.append((*head, name, *metrics, "?", "UNREADABLE", "-", "-"))
                continue
            s = ladders.get(name, {"crawls": 0, "rung": rungs.NONE.name, "env": {},
                                   "pending": None})
            pending = s.get("pending")
            env = " ".join(f"{k}={v}" for k, v in sorted(s["env"].items())) or "-"
            rows.append((*head, name, *metrics, str(s["crawls"]), s["rung"], env,
                         f"{pending['id']} {pending['rung']}" if pending else "-"))
    lines = table(rows)
    reachable = sum(r["reachable"] for r in found)
    lines.append(f"{reachable} of {len(found)} rigs reachable")
    return "\n".join(lines + problems)


def run_rung(args: argparse.Namespace) -> int:
    layout, rigs = open_fleet(args.fleet)
    rig = fleetfile.find_rig(rigs, args.rig)
    with FleetClient(layout).sidecar(rig) as client:
        print(f"{rig.name} " + take_rung(client, args.shard, args.rung, args.reason))
    return 0
