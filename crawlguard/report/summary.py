"""The Markdown summary of a rebuild's evidence (``crawlguard report``).

No matplotlib, like ``evidence``; the charts are in ``chart``.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from datetime import datetime, timezone

from crawlguard.kernel.formats.vramlog import VramSample

from .evidence import RunEvidence, ShardEvidence, vram_for


def fmt_time(t: float | None) -> str:
    if t is None:
        return "?"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def fmt_duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}"


def genes_text(ev: ShardEvidence) -> str:
    """The genes processed, labelled: with the build's total known, how many were distinct
    and how many were redone after restarts (a killed worker's batches are done again)."""
    unique = ev.unique_genes
    if unique is None:
        return f"{ev.genes:g} genes processed"
    redone = ev.genes - unique
    if redone <= 0:
        return f"{ev.genes:g} genes processed, none redone"
    return f"{ev.genes:g} genes processed, {unique:g} unique, {redone:g} redone after restarts"


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def shard_section(ev: ShardEvidence, vram: list[VramSample], chart: str | None,
                  now: float | None = None) -> list[str]:
    lines = [f"## {ev.shard}", ""]
    if chart:
        lines += [f"![{ev.shard}]({chart})", ""]
    span = ev.span()
    if span is not None:
        lines.append(f"- batches: {len(ev.batches)}, {genes_text(ev)}, "
                     f"from {fmt_time(span[0])} to {fmt_time(span[1])} "
                     f"({fmt_duration(span[1] - span[0])})")
    else:
        lines.append("- batches: 0 (no batches.jsonl lines)")
    for (stage, device), base in ev.baselines().items():
        rows = [b for b in ev.batches if b.stage == stage and b.device == device]
        factor = rows[-1].factor
        emas = [b.ema for b in rows if b.ema is not None]
        lines.append(
            f"- {stage} on {device}: baseline {fmt_rate(base)} genes/s, crawl threshold "
            f"{fmt_rate(base / factor)} (factor {factor:g}); median batch "
            f"{fmt_rate(statistics.median(b.rate for b in rows))} genes/s, lowest EMA "
            f"{fmt_rate(min(emas) if emas else None)}, last EMA "
            f"{fmt_rate(emas[-1] if emas else None)}")
    lines.append(f"- crawls: {ev.crawls}, highest rung: {ev.rung}, final device: "
                 f"{ev.final_device}")
    if ev.ooms:
        lines.append(f"- out-of-memory batches: {sum(r.count for r in ev.ooms)} in "
                     f"{len(ev.ooms)} worker(s), {ev.oom_deaths} of them died of it: "
                     + ", ".join(f"pid {r.pid} at {fmt_time(r.at)} on {r.device}"
                                 + (" (survived)" if r.recovered else "") for r in ev.ooms))
    if ev.env:
        lines.append("- resume overrides: " + ", ".join(f"`{k}={v}`" for k, v in
                                                        sorted(ev.env.items())))
    lines.append(f"- time lost to crawling (estimate): {fmt_duration(ev.lost_seconds)}: "
                 f"{ev.slow_batches} batches slower than factor x their time at the "
                 f"baseline's pace, and "
                 f"{fmt_duration(ev.unfinished_lost_seconds)} in batches a rung cut short")
    samples = vram_for(ev, vram)
    if samples:
        peak = max(samples, key=lambda s: s.used_bytes / s.total_bytes)
        lines.append(f"- peak dedicated VRAM: {_gib(peak.used_bytes)} / "
                     f"{_gib(peak.total_bytes)} on GPU {peak.gpu} at {fmt_time(peak.t)}")
    for onset in ev.onsets:
        what = ("the last batch before a stall ended" if onset.stalled
                else "the slow streak began")
        lines.append(f"- slowdown onset {fmt_time(onset.t)} ({what}); rung "
                     f"{fmt_duration(onset.until - onset.t)} later, at {fmt_time(onset.until)}")
    for alert in ev.alerts:
        lines.append(f"- alert {alert.alertname} firing from {fmt_time(alert.t)}")
    for start, end in ev.stalls(now):
        lines.append(f"- stalled batch: from {fmt_time(start)} for {fmt_duration(end - start)}"
                     + (" (running still)" if end == now else " (cut by the rung)"))
    for v in ev.verifications:
        lines.append(f"- {v.id or '?'}: {v.reason or v.outcome or '?'} (at {fmt_time(v.at)})")
    if ev.ladder_error:
        lines.append(f"- ladder.json unreadable: {ev.ladder_error}")
    if ev.skipped_lines:
        lines.append(f"- skipped {ev.skipped_lines} unreadable batches.jsonl line(s)")
    if ev.rungs:
        lines += ["", "| time (UTC) | rung | outcome | reason |", "|---|---|---|---|"]
        for r in ev.rungs:
            reason = r.reason.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {fmt_time(r.t)} | {r.rung} | {r.outcome or '-'} | {reason} |")
    lines.append("")
    return lines


def summary_markdown(run: RunEvidence, charts: Mapping[str, str] | None = None,
                     now: float | None = None) -> str:
    charts = charts or {}
    lines = ["# crawlguard rebuild report", "",
             f"State dir: `{run.state_dir.resolve()}`; written {fmt_time(now)}.", "",
             "Time lost to crawling is an estimate: at every rung, the time the stopped "
             "worker's unfinished batch ran beyond one batch at baseline pace (a stalled batch "
             "never finishes); plus, for every batch slower than factor x its time at the "
             "baseline's pace (its shape's predicted seconds: a long batch is not a slow one), "
             "the seconds beyond that time.", "",
             "Genes are those the workers processed: work redone after a restart counts "
             "again; the unique count is the build's total less what its last worker had "
             "left (known when its tracker is given total=).", "",
             "| shard | genes processed | batches | baseline (genes/s) | crawls | rungs "
             "| final device | time lost |",
             "|---|---:|---:|---|---:|---|---|---:|"]
    for ev in run.shards:
        bases = ", ".join(f"{fmt_rate(v)} ({d})" for (_, d), v in ev.baselines().items())
        rungs = ", ".join(f"{r.rung} {fmt_time(r.t)}" for r in ev.rungs) or "-"
        unique = ev.unique_genes
        genes = f"{ev.genes:g}" + ("" if unique is None or unique == ev.genes
                                   else f" ({unique:g} unique)")
        lines.append(f"| {ev.shard} | {genes} | {len(ev.batches)} | {bases or '-'} "
                     f"| {ev.crawls} | {rungs} | {ev.final_device} "
                     f"| {fmt_duration(ev.lost_seconds)} |")
    lines.append("")
    if run.skipped:
        lines.append("Skipped unreadable lines: " + ", ".join(
            f"{path}: {n}" for path, n in sorted(run.skipped.items())) + ".")
        lines.append("")
    for ev in run.shards:
        lines += shard_section(ev, run.vram, charts.get(ev.shard), now)
    return "\n".join(lines) + "\n"
