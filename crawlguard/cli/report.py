"""`crawlguard report`: chart and summarise a rebuild from its state dir."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from crawlguard.kernel.errors import ReportError, StateError
from crawlguard.kernel.settings import Detection, state_dir_from_env
from crawlguard.report.evidence import load_run
from crawlguard.report.summary import summary_markdown

from . import HELP

SUMMARY = "report.md"


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "report", help=HELP["report"],
        description="Write the evidence of a rebuild (finished or running) from its state "
                    "dir: a PNG chart per shard (genes/s per batch, EMA, baseline, crawl "
                    "threshold, rungs, VRAM when recorded) and a Markdown summary. Needs "
                    "matplotlib for the charts: pip install 'crawlguard[report]'.")
    p.add_argument("--state-dir", type=Path,
                   help="state dir to read (default HELIX_BFM_STATE_DIR or .crawlguard)")
    p.add_argument("--out", type=Path,
                   help="directory to write into (default <state dir>/report)")
    p.add_argument("--shard", action="append", default=[], metavar="NAME",
                   help="only this shard (repeatable; default every shard)")
    p.add_argument("--no-charts", action="store_true",
                   help="write the Markdown summary only (no matplotlib needed)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir or state_dir_from_env()
    out: Path = args.out or state_dir / "report"
    detection = Detection.from_env()
    if not args.no_charts:
        # Fail before writing anything when the charts cannot be drawn.
        from crawlguard.report.chart import require_matplotlib
        require_matplotlib()
    run = load_run(state_dir, args.shard or None)
    if not run.shards:
        raise ReportError(f"no shards under {state_dir / 'shards'}: nothing to report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create {out}: {exc.strerror}") from exc
    charts: dict[str, str] = {}
    now = time.time()
    if not args.no_charts:
        from crawlguard.report.chart import render_shard_chart
        for ev in run.shards:
            path = render_shard_chart(ev, run.vram, out / f"{ev.shard}.png",
                                      full_ratio=detection.vram_full_ratio, now=now)
            charts[ev.shard] = path.name
            print(f"chart   {path}")
    summary = out / SUMMARY
    try:
        summary.write_text(summary_markdown(run, charts, now=now), encoding="utf-8")
    except OSError as exc:
        raise StateError(f"cannot write {summary}: {exc.strerror}") from exc
    print(f"summary {summary}")
    for name, count in sorted(run.skipped.items()):
        print(f"skipped {count} unreadable line(s) of {name}", file=sys.stderr)
    return 0
