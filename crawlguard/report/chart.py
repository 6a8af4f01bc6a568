"""One PNG per shard: each batch's work rate, EMA, baseline, crawl threshold, rungs, VRAM.

What explains the delay before a rung is drawn too: the slowdown's onset (the first
batch of the slow streak, or the end of the last batch before a stall), the alert
(when it began firing), and a stalled batch as the hatched span it ran until the
rung cut it (or until now, while the shard's live worker is in it). VRAM is drawn
as steps (a sample holds until the next one: a line between samples would show a
release that did not happen). The legend has one entry per meaning, and the time
axis reads as clock time (UTC).

matplotlib is the optional ``report`` extra, so it is imported here, lazily,
and only through ``require_matplotlib`` which turns its absence into one clear
message. A ``Figure`` drawn on its own Agg canvas (never ``pyplot``, never
``matplotlib.use``) keeps the rendering headless and leaves the process's
backend alone: a program that imports crawlguard may have its own, the sidecar
may call it from a thread, and nothing needs a display.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from crawlguard.kernel import rungs
from crawlguard.kernel.errors import ReportError
from crawlguard.kernel.formats.batchlog import Batch
from crawlguard.kernel.formats.vramlog import VramSample

from .evidence import MARKERS, RESET, ShardEvidence, vram_for
from .summary import fmt_rate, fmt_time, genes_text

# The rungs of kernel.rungs.TAKEN in order of level, then the reset that undoes them.
_TAKEN_COLOURS = ("tab:orange", "tab:purple", "tab:red", "tab:olive")
RUNG_COLOURS = {**{r.name: _TAKEN_COLOURS[i % len(_TAKEN_COLOURS)]
                   for i, r in enumerate(rungs.TAKEN)}, RESET: "tab:green"}
OOM_COLOUR = "tab:brown"
ONSET_COLOUR = "tab:pink"
ALERT_COLOUR = "black"
STALL_HATCH = "///"
STALL_LABEL = "stalled batch (no line: cut by a rung, or running still)"
TIME_FORMATS = {False: "%H:%M:%S", True: "%H:%M"}
LONG_SPAN_S = 6 * 3600.0
"""Beyond this span the seconds of a tick say nothing."""
# A spread this large means a crawl: only a log axis shows 15 and 0.02 genes/s together.
LOG_SPREAD = 20.0


def require_matplotlib() -> ModuleType:
    try:
        import matplotlib
    except ImportError as exc:
        raise ReportError(
            "charts need matplotlib, which is not installed: pip install 'crawlguard[report]' "
            "(or pass --no-charts for the Markdown summary alone)") from exc
    return matplotlib


def _dates(ts: Iterable[float]) -> list[datetime]:
    return [datetime.fromtimestamp(t, tz=timezone.utc) for t in ts]


def _groups(batches: list[Batch]) -> dict[tuple[str, str], list[Batch]]:
    out: dict[tuple[str, str], list[Batch]] = {}
    for b in batches:
        out.setdefault((b.stage, b.device), []).append(b)
    return out


def _plot_rates(ax: Any, ev: ShardEvidence) -> None:
    # Each batch at its work's rate (genes/s for a batch of the baseline's shape), so a
    # long batch sits where its pace is, on the scale of the EMA and the threshold.
    rates = [b.work_rate for b in ev.batches if b.work_rate > 0]
    labelled: set[str] = set()

    def once(label: str) -> str | None:
        """A label the first time a meaning is drawn; matplotlib skips None."""
        if label in labelled:
            return None
        labelled.add(label)
        return label

    for i, ((stage, device), rows) in enumerate(_groups(ev.batches).items()):
        tag = f"{stage}/{device}"
        colour = f"C{i % 10}"
        pts = [b for b in rows if b.work_rate > 0]
        ax.scatter(_dates(b.t for b in pts), [b.work_rate for b in pts], s=9, color=colour,
                   alpha=0.45, label=once(f"batches on {tag} (work / seconds)"))
        # The EMA lives in one worker process: a restart starts a new line.
        for pid in dict.fromkeys(b.pid for b in rows):
            ema = [b for b in rows if b.pid == pid and b.ema is not None and b.ema > 0]
            if ema:
                ax.plot(_dates(b.t for b in ema), [b.ema for b in ema], color=colour, lw=1.8,
                        label=once(f"EMA on {tag}"))
        base = [b for b in rows if b.baseline is not None]
        if base:
            # One meaning each, whatever the device: the device is the colour of its batches.
            xs = _dates(b.t for b in base)
            ax.step(xs, [b.baseline for b in base], where="post", color="0.35", lw=1.2,
                    label=once("baseline"))
            ax.step(xs, [b.threshold for b in base], where="post", color="tab:red", lw=1.2,
                    ls="--", label=once("crawl threshold = baseline / factor"))
    if rates and max(rates) / min(rates) > LOG_SPREAD:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)  # a linear axis from 0 shows a drop at its true size
    ax.set_ylabel("genes/s (at the baseline's shape)")
    ax.grid(True, which="major", alpha=0.3)


def _mark_rungs(axes: list[Any], ev: ShardEvidence) -> None:
    top = axes[0]
    for r in ev.rungs:
        x = datetime.fromtimestamp(r.t, tz=timezone.utc)
        colour = RUNG_COLOURS.get(r.rung, "black")
        for ax in axes:
            ax.axvline(x, color=colour, lw=1.5, ls=":")
        label = r.rung + (" (drill)" if r.drill else "") + (f" ({r.outcome})" if r.outcome else "")
        top.annotate(label, xy=(x, 1.0), xycoords=("data", "axes fraction"),
                     xytext=(3, -12), textcoords="offset points", color=colour,
                     fontsize=8, rotation=90, va="top")
    # One legend entry per rung kind present, drawn with the same style.
    for kind in MARKERS:
        if any(r.rung == kind for r in ev.rungs):
            label = RESET if kind == RESET else f"rung: {kind}"
            top.plot([], [], color=RUNG_COLOURS[kind], ls=":", lw=1.5,
                     label=label)


def _mark_onsets_and_alerts(axes: list[Any], ev: ShardEvidence, now: float | None) -> None:
    """Why a rung came when it did: the slowdown's onset, the alert, and a stalled batch
    as the span it ran (it finished no line of its own) until the rung cut it."""
    top = axes[0]
    for onset in ev.onsets:
        x = datetime.fromtimestamp(onset.t, tz=timezone.utc)
        for ax in axes:
            ax.axvline(x, color=ONSET_COLOUR, lw=1.5, ls="--")
    for alert in ev.alerts:
        x = datetime.fromtimestamp(alert.t, tz=timezone.utc)
        for ax in axes:
            ax.axvline(x, color=ALERT_COLOUR, lw=1.2, ls=(0, (1, 1)))
        top.annotate(alert.alertname, xy=(x, 0.0), xycoords=("data", "axes fraction"),
                     xytext=(-3, 12), textcoords="offset points", color=ALERT_COLOUR,
                     fontsize=8, rotation=90, va="bottom", ha="right")
    for i, (start, end) in enumerate(ev.stalls(now)):
        span = _dates((start, end))
        for ax in axes:
            ax.axvspan(span[0], span[1], facecolor=(0, 0, 0, 0), edgecolor="0.7", hatch=STALL_HATCH,
                       lw=0, label=STALL_LABEL if ax is top and i == 0 else None)
    if ev.onsets:
        top.plot([], [], color=ONSET_COLOUR, ls="--", lw=1.5,
                 label="onset: first slow batch, or a stall's start")
    if ev.alerts:
        top.plot([], [], color=ALERT_COLOUR, ls=(0, (1, 1)), lw=1.2, label="alert firing")


def _mark_ooms(axes: list[Any], ev: ShardEvidence) -> None:
    """A red dash-dot line per out-of-memory batch: the crawl's twin."""
    top = axes[0]
    for rec in ev.ooms:
        x = datetime.fromtimestamp(rec.at, tz=timezone.utc)
        for ax in axes:
            ax.axvline(x, color=OOM_COLOUR, lw=1.2, ls="-.")
        label = f"OOM{' x' + str(rec.count) if rec.count > 1 else ''}" + (
            " (survived)" if rec.recovered else f" (pid {rec.pid} died)")
        top.annotate(label, xy=(x, 0.0), xycoords=("data", "axes fraction"),
                     xytext=(3, 12), textcoords="offset points", color=OOM_COLOUR,
                     fontsize=8, rotation=90, va="bottom")
    if ev.ooms:
        top.plot([], [], color=OOM_COLOUR, ls="-.", lw=1.2, label="out of memory")


def _plot_vram(ax: Any, samples: list[VramSample], full_ratio: float) -> None:
    gib = 2.0 ** 30
    for gpu in sorted({s.gpu for s in samples}):
        rows = [s for s in samples if s.gpu == gpu]
        xs = _dates(s.t for s in rows)
        # A sample holds until the next: steps, never a slope between samples.
        ax.step(xs, [s.used_bytes / gib for s in rows], where="post", lw=1.5,
                label=f"GPU {gpu} used")
        ax.step(xs, [s.total_bytes / gib for s in rows], where="post", lw=1, color="0.3",
                label=f"GPU {gpu} total")
        ax.step(xs, [s.total_bytes * full_ratio / gib for s in rows], where="post", lw=1,
                ls="--", color="tab:red", label=f"GPU {gpu} full ({full_ratio:g} x total)")
    ax.set_ylabel("dedicated VRAM (GiB)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)


def render_shard_chart(ev: ShardEvidence, vram: list[VramSample], path: Path,
                       full_ratio: float = 0.95, dpi: int = 100,
                       now: float | None = None) -> Path:
    """Write ``path`` (PNG) for one shard; returns it. ``now``: a batch the live worker
    has been in too long is drawn as a stall up to then."""
    fig = draw_shard_chart(ev, vram, full_ratio, dpi, now)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def draw_shard_chart(ev: ShardEvidence, vram: list[VramSample], full_ratio: float = 0.95,
                     dpi: int = 100, now: float | None = None) -> Any:
    """The chart of one shard as a matplotlib ``Figure`` on its own Agg canvas."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, DateFormatter
    from matplotlib.figure import Figure

    samples = vram_for(ev, vram)
    rows = 2 if samples else 1
    fig = Figure(figsize=(13, 7.5 if samples else 5.5), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [3, 1.4][:rows]})[:, 0].tolist()
    bases = ", ".join(f"{fmt_rate(v)} on {d}" for (_, d), v in ev.baselines().items())
    fig.suptitle(f"{ev.shard}: {genes_text(ev)}, in {len(ev.batches)} batches; crawls "
                 f"{ev.crawls}, rung {ev.rung}, final device {ev.final_device}"
                 + (f", OOM deaths {ev.oom_deaths}" if ev.ooms else "")
                 + (f"\nbaseline {bases} genes/s" if bases else ""), fontsize=11)
    if ev.batches:
        _plot_rates(axes[0], ev)
    else:
        axes[0].text(0.5, 0.5, "no batches recorded", ha="center", va="center",
                     transform=axes[0].transAxes)
    if samples:
        _plot_vram(axes[1], samples, full_ratio)
    _mark_onsets_and_alerts(axes, ev, now)
    _mark_rungs(axes, ev)
    _mark_ooms(axes, ev)
    if ev.batches:
        # Outside the axes: a crawl fills the bottom of the plot, health the top.
        axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    # Clock time on every tick (a concise formatter would show seconds past the minute).
    span = ev.span()
    long = span is not None and span[1] - span[0] > LONG_SPAN_S
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(DateFormatter(TIME_FORMATS[long], tz=timezone.utc))  # type: ignore[no-untyped-call]
    day = f", {fmt_time(span[0])[:10]}" if span is not None else ""
    axes[-1].set_xlabel(f"time (UTC{day})")
    return fig
