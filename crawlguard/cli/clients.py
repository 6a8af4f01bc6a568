"""`crawlguard rung`, `status`, `pause`, `resume`: clients of the sidecar API.

They reach the sidecar of a running ``crawlguard up`` on the state dir, with the token
file it recorded (``crawlguard.kernel.discovery``), or else HELIX_BFM_SIDECAR_URL
(default http://127.0.0.1:9848) with the token from HELIX_BFM_SIDECAR_TOKEN or
HELIX_BFM_SIDECAR_TOKEN_FILE; knobs that are set win. An unreachable sidecar or a
refusal is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from crawlguard.kernel import rungs
from crawlguard.kernel.discovery import HELP as FINDING
from crawlguard.kernel.settings import Detection
from crawlguard.sidecar.client import SidecarClient

from . import HELP

RESET = "reset"
"""Not a rung: ``crawlguard rung SHARD reset`` forgets the ladder (POST .../reset)."""
RUNG_CHOICES = (*rungs.MANUAL, RESET)
"""What ``crawlguard rung`` and ``crawlguard fleet rung`` accept."""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    taken = ", ".join(f"{r.name} ({r.label})" for r in rungs.TAKEN)
    p = sub.add_parser(
        "rung", help=HELP["rung"],
        description=f"Force a rung by hand: {taken}, {rungs.NEXT} (climb one rung), or "
                    f"{RESET} (forget the ladder: back to GPU). {FINDING}")
    p.add_argument("shard")
    p.add_argument("rung", choices=RUNG_CHOICES)
    p.add_argument("--reason", default="", help="recorded in the shard's history")
    p.set_defaults(func=rung)
    p = sub.add_parser(
        "status", help=HELP["status"],
        description="Ask the sidecar for the ladder of every shard: crawls counted, the highest "
                    "rung taken, the resume overrides, a rung in progress. With SHARD, that "
                    "shard's history too; a shard the sidecar does not know is an error "
                    "(exit 2). A shard whose state is unreadable is listed as such. "
                    + FINDING)
    p.add_argument("shard", nargs="?", help="one shard (default: all)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(func=status)
    descriptions = {
        "pause": "Stop the sidecar taking rungs, alerts and manual ones alike, until "
                 "'crawlguard resume'. Alerts are still judged and recorded (crawls count); "
                 "the switch is durable across sidecar restarts. For maintenance, or while "
                 "you look at a shard by hand.",
        "resume": "Let the sidecar take rungs again after 'crawlguard pause'. Crawls "
                  "recorded while paused are not acted on afterwards: if a worker is still "
                  "crawling, force its rung with 'crawlguard rung SHARD next'."}
    for name, paused in (("pause", True), ("resume", False)):
        p = sub.add_parser(name, help=HELP[name], description=f"{descriptions[name]} {FINDING}")
        p.add_argument("--reason", default="", help="recorded in the sidecar's audit log")
        p.set_defaults(func=pause, paused=paused)


def rung(args: argparse.Namespace) -> int:
    with SidecarClient.from_env() as client:
        print(take_rung(client, args.shard, args.rung, args.reason))
    return 0


def take_rung(client: SidecarClient, shard: str, rung: str, reason: str) -> str:
    """Force ``rung`` (or ``reset``) on ``shard``; the line that says what happened."""
    if rung == RESET:
        client.reset(shard, reason)
        return f"{shard}: reset (rung none, env cleared)"
    view = client.rung(shard, rung, reason)
    taken: dict[str, Any] = next(
        (h for h in reversed(view["history"]) if h["kind"] == "rung"), {})
    outcome = taken.get("outcome") or "in progress (carried out in the background)"
    return (f"{shard}: {taken.get('rung', rung)} decided as {taken.get('id', '?')}: "
            f"{outcome}; the shard's rung is now {view['rung']}")


def pause(args: argparse.Namespace) -> int:
    with SidecarClient.from_env() as client:
        client.pause(args.paused, args.reason)
    print("sidecar paused: no rungs until 'crawlguard resume'" if args.paused
          else "sidecar resumed")
    return 0


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """``rows`` (the first one the header) as lines of left-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _env(env: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(env.items())) or "-"


def status(args: argparse.Namespace) -> int:
    Detection.from_env()  # the same knobs the rig runs with: a bad one is reported here too
    with SidecarClient.from_env() as client:
        data = client.shard(args.shard) if args.shard else client.shards()
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    shards = [data] if args.shard else data["shards"]
    print(f"action={data['action']} paused={'yes' if data['paused'] else 'no'}")
    rows = [("SHARD", "CRAWLS", "RUNG", "ENV", "IN PROGRESS", "LAST RUNG EFFECTIVE",
             "LAST RESTART")]
    for s in shards:
        pending = s.get("pending")
        verified = next((h for h in reversed(s["history"]) if h["kind"] == "verified"), None)
        rows.append((s["shard"], str(s["crawls"]), s["rung"], _env(s["env"]),
                     f"{pending['id']} {pending['rung']}" if pending else "-",
                     _when(s.get("last_rung_effective_at")),
                     f"{verified['id']} {verified['reason']}" if verified else "-"))
    for bad in data.get("unreadable", []):
        rows.append((bad["shard"], "?", "UNREADABLE", "-", "-", "-", "-"))
    for line in table(rows):
        print(line)
    for bad in data.get("unreadable", []):
        print(f"{bad['shard']}: {bad['error']} ('crawlguard rung {bad['shard']} reset' "
              "repairs it)", file=sys.stderr)
    if args.shard:
        for h in data["history"]:
            extra = " ".join(f"{k}={h[k]}" for k in ("rung", "alertname", "outcome", "reason")
                             if h.get(k))
            print(f"  {_when(h['at'])}  {h['kind']:<12} {extra}")
    return 0
