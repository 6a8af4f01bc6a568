"""The alert conditions of ``rules/crawlguard.rules.yml``, in Python.

Each ``Rule`` is the twin of one alerting rule of the shipped file: same name,
``for`` duration, labels and annotation templates (a test compares them with
the YAML), and a condition that returns what the rule's PromQL would: the
output label set of every matching series and the alert's value.

The conditions follow PromQL's semantics where they matter for parity:
vector/vector arithmetic and comparisons match series on all labels
(one-to-one), ``and on (instance, gpu)`` keeps the left side where a right
side with the same (instance, gpu) exists, ``ignoring (pid) group_left (pid)``
adds the worker's pid from ``bfm_worker_info``, ``label_replace`` matches its
regex anchored and leaves the label alone when it does not match, ``or``
keeps the left side where both have a label set, comparisons with NaN are false and
a division by zero gives +-Inf or NaN instead of raising. The floating-point
operations are done in the same order as the PromQL expressions, so boundary
cases agree bit for bit.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from .files import RUNBOOK_URL
from .samples import LabelSet, Snapshot

# Recording rules of the shipped file (evaluated here on the fly).
RATIO_RECORD = "shard_stage_device_gpu:bfm_genes_per_second_ema_per_baseline:ratio"
VRAM_RECORD = "gpu:bfm_vram_used_per_total_bytes:ratio"
SHARED_RECORD = "shard_stage_device_gpu_pid:bfm_shared_memory_bytes:sum"
EVIDENCE_RECORD = "shard_stage_device_gpu_pid:bfm_spill_evidence:any"
WINDOWS_SHARED = "windows_gpu_process_memory_shared_bytes"
"""windows_exporter's gpu collector: shared GPU memory per process and adapter."""
_HOST = re.compile(r"(.+):[0-9]+")  # label_replace(..., "host", "$1", "instance", "(.+):[0-9]+")

BATCHES_WINDOW_S = 3600.0  # the [1h] of BFMMetricsAbsent
CORRUPT_COUNTER = "bfm_exporter_corrupt_files_total"
CORRUPT_WINDOW_S = 3600.0  # the [1h] of BFMMetricsFileCorrupt


def prom_div(a: float, b: float) -> float:
    """IEEE division as Go does it: x/0 is +-Inf (NaN for 0/0 or NaN/0)."""
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def one_to_one(left: Mapping[LabelSet, float], right: Mapping[LabelSet, float],
               op: Callable[[float, float], float]) -> dict[LabelSet, float]:
    """``left OP right`` for two vectors matched on all labels."""
    return {ls: op(v, right[ls]) for ls, v in left.items() if ls in right}


def key(labels: LabelSet, names: tuple[str, ...]) -> tuple[str, ...]:
    """The ``on (names)`` matching signature (absent label = "")."""
    d = dict(labels)
    return tuple(d.get(n, "") for n in names)


class History:
    """What range functions need.

    ``bfm_batches_total``: the last time each series was sampled, for
    ``max_over_time(...[1h])``. ``bfm_exporter_corrupt_files_total``: every
    sample of the last hour (one series per exporter, one sample per tick),
    for ``increase(...[1h])``. Samples older than the range are forgotten.
    """

    def __init__(self) -> None:
        self.batches_seen: dict[LabelSet, float] = {}
        self.corrupt_samples: dict[LabelSet, list[tuple[float, float]]] = {}

    def observe(self, snapshot: Snapshot, now: float) -> None:
        for s in snapshot.samples("bfm_batches_total"):
            ts = now if s.timestamp is None else s.timestamp
            if ts > self.batches_seen.get(s.labels, -math.inf):
                self.batches_seen[s.labels] = ts
        horizon = now - BATCHES_WINDOW_S
        for ls in [ls for ls, ts in self.batches_seen.items() if ts < horizon]:
            del self.batches_seen[ls]
        for s in snapshot.samples(CORRUPT_COUNTER):
            ts = now if s.timestamp is None else s.timestamp
            kept = self.corrupt_samples.setdefault(s.labels, [])
            # A snapshot's lookback repeats a sample: a range holds it once.
            if (not kept or ts > kept[-1][0]) and not math.isnan(s.value):
                kept.append((ts, s.value))
        horizon = now - CORRUPT_WINDOW_S
        for ls in list(self.corrupt_samples):
            kept = [(ts, v) for ts, v in self.corrupt_samples[ls] if ts >= horizon]
            if kept:
                self.corrupt_samples[ls] = kept
            else:
                del self.corrupt_samples[ls]


Condition = Callable[[Snapshot, float, History], dict[LabelSet, float]]


@dataclass(frozen=True)
class Rule:
    name: str
    condition: Condition
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    for_s: float = 0.0


def _ratio(s: Snapshot) -> dict[LabelSet, float]:
    return one_to_one(s.series("bfm_genes_per_second_ema"),
                      s.series("bfm_genes_per_second_baseline"), prom_div)


def _full_gpus(s: Snapshot) -> set[tuple[str, ...]]:
    """``(instance, gpu)`` of every GPU with used/total >= the full-ratio knob."""
    used_ratio = one_to_one(s.series("bfm_vram_used_bytes"), s.series("bfm_vram_total_bytes"),
                            prom_div)
    full = one_to_one(used_ratio, s.series("bfm_vram_full_ratio"), lambda a, b: a >= b)
    return {key(ls, ("instance", "gpu")) for ls, ok in full.items() if ok}


def without(labels: LabelSet, name: str) -> LabelSet:
    return tuple((n, v) for n, v in labels if n != name)


def _host(instance: str) -> str:
    m = _HOST.fullmatch(instance)
    return m.group(1) if m else ""


def _gpu_workers(s: Snapshot) -> dict[LabelSet, float]:
    """``bfm_worker_info{gpu!=""}``: live workers on a GPU, labels with their pid."""
    return {ls: v for ls, v in s.series("bfm_worker_info").items() if dict(ls).get("gpu")}


def shared_memory(s: Snapshot) -> dict[LabelSet, float]:
    """The ``SHARED_RECORD`` rule: each GPU worker's shared GPU memory (labels:
    its info's), from ``bfm_worker_shared_memory_bytes`` or else windows_exporter."""
    info = _gpu_workers(s)
    own = s.series("bfm_worker_shared_memory_bytes")
    out = {ls: own[without(ls, "pid")] * v for ls, v in info.items() if without(ls, "pid") in own}
    # sum by (host, pid) of label_replace'd windows_exporter series
    summed: dict[tuple[str, str], float] = {}
    for ls, v in s.series(WINDOWS_SHARED).items():
        d = dict(ls)
        k = (_host(d.get("instance", "")), d.get("process_id", ""))
        summed[k] = summed.get(k, 0.0) + v
    for ls, v in info.items():
        d = dict(ls)
        k = (_host(d.get("instance", "")), d.get("pid", ""))
        if ls not in out and k in summed:
            out[ls] = v * summed[k]
    return out


def _newest_pid(s: Snapshot) -> dict[LabelSet, LabelSet]:
    """``topk without (pid) (1, timestamp(bfm_worker_info{gpu!=""}))``: per worker (its
    labels without pid) the info series sampled last. Two pids share a worker's labels
    while a predecessor's series lingers without a staleness marker; a fresh sample
    (timestamp None, taken now) is the newest. On a tie Prometheus keeps either one."""
    newest: dict[LabelSet, tuple[float, LabelSet]] = {}
    for sample in s.samples("bfm_worker_info"):
        if not dict(sample.labels).get("gpu"):
            continue
        t = float("inf") if sample.timestamp is None else sample.timestamp
        worker = without(sample.labels, "pid")
        if worker not in newest or t >= newest[worker][0]:
            newest[worker] = (t, sample.labels)
    return {worker: labels for worker, (_, labels) in newest.items()}


def spill_evidence(s: Snapshot) -> dict[LabelSet, float]:
    """The ``EVIDENCE_RECORD`` rule: GPU workers (labels with pid) whose GPU is
    full (a), whose shared GPU memory reached the knob (b), or whose torch
    reservation exceeds the GPU's dedicated total (c); value: the info's. Only the
    newest pid of each worker (``_newest_pid``)."""
    full = _full_gpus(s)
    shared, minimum = shared_memory(s), s.series("bfm_shared_min_bytes")
    total = {key(ls, ("instance", "gpu")): v for ls, v in s.series("bfm_vram_total_bytes").items()}
    over_total = {ls for ls, v in s.series("bfm_worker_vram_reserved_bytes").items()
                  if key(ls, ("instance", "gpu")) in total
                  and v > total[key(ls, ("instance", "gpu"))]}
    newest = _newest_pid(s)
    out: dict[LabelSet, float] = {}
    for ls, v in _gpu_workers(s).items():
        worker = without(ls, "pid")
        if newest.get(worker) != ls:
            continue
        if (key(ls, ("instance", "gpu")) in full
                or (ls in shared and worker in minimum and shared[ls] >= minimum[worker])
                or worker in over_total):
            out[ls] = v
    return out


def _with_pid(signature: dict[LabelSet, float], s: Snapshot) -> dict[LabelSet, float]:
    """``signature * ignoring (pid) group_left (pid) EVIDENCE_RECORD``."""
    evidence = {without(ls, "pid"): (dict(ls)["pid"], v) for ls, v in spill_evidence(s).items()
                if dict(ls).get("pid")}
    out: dict[LabelSet, float] = {}
    for ls, value in signature.items():
        if ls in evidence:
            pid, v = evidence[ls]
            out[tuple(sorted((*ls, ("pid", pid))))] = value * v
    return out


def _rate_signature(s: Snapshot, only_device: str | None) -> dict[LabelSet, float]:
    """ratio < 1 / factor and streak >= window; value: the ratio."""
    factor, streak, window = (s.series("bfm_crawl_factor"), s.series("bfm_crawl_streak_batches"),
                              s.series("bfm_crawl_window_batches"))
    out: dict[LabelSet, float] = {}
    for ls, ratio in _ratio(s).items():
        if only_device is not None and dict(ls).get("device") != only_device:
            continue
        if ls not in factor or ls not in streak or ls not in window:
            continue
        if ratio < prom_div(1.0, factor[ls]) and streak[ls] >= window[ls]:
            out[ls] = ratio
    return out


def crawl(s: Snapshot, now: float, history: History) -> dict[LabelSet, float]:
    return _with_pid(_rate_signature(s, None), s)


def crawl_on_cpu(s: Snapshot, now: float, history: History) -> dict[LabelSet, float]:
    return _rate_signature(s, "cpu")


def stalled(s: Snapshot, now: float, history: History) -> dict[LabelSet, float]:
    """now - started >= window * factor * work / baseline, work > 0, spill evidence,
    where work is ``bfm_batch_inflight_work or bfm_batch_inflight_genes`` (the genes of
    a worker of an earlier release); value: the seconds the batch has been in flight."""
    window, factor = s.series("bfm_crawl_window_batches"), s.series("bfm_crawl_factor")
    baseline = s.series("bfm_genes_per_second_baseline")
    # `a or b`: every series of a, then those of b whose label set a lacks.
    inflight = {**s.series("bfm_batch_inflight_genes"), **s.series("bfm_batch_inflight_work")}
    out: dict[LabelSet, float] = {}
    for ls, started in s.series("bfm_batch_started_timestamp_seconds").items():
        if not all(ls in m for m in (window, factor, inflight, baseline)):
            continue
        elapsed = now - started
        threshold = prom_div(window[ls] * factor[ls] * inflight[ls], baseline[ls])
        if elapsed >= threshold and inflight[ls] > 0:
            out[ls] = elapsed
    return _with_pid(out, s)


def metrics_absent(s: Snapshot, now: float, history: History) -> dict[LabelSet, float]:
    """count by (job, instance) of bfm_batches_total over the last hour, unless
    some is present now; value: that count."""
    names = ("job", "instance")
    present = {key(ls, names) for ls in s.series("bfm_batches_total")}
    counts: dict[tuple[str, ...], float] = {}
    for ls, ts in history.batches_seen.items():
        if ts >= now - BATCHES_WINDOW_S:
            k = key(ls, names)
            counts[k] = counts.get(k, 0.0) + 1.0
    return {tuple(sorted((n, v) for n, v in zip(names, k, strict=True) if v)): c
            for k, c in counts.items() if k not in present}


def counter_increased(samples: list[tuple[float, float]]) -> bool:
    """``increase(...) > 0`` over these samples: PromQL needs two of them, corrects
    a counter reset (a drop) by adding the value before it, and only scales the raw
    difference by a positive extrapolation factor, so the sign is the raw one."""
    if len(samples) < 2:
        return False
    raw = samples[-1][1] - samples[0][1]
    for (_, prev), (_, cur) in itertools.pairwise(samples):
        if cur < prev:
            raw += prev
    return raw > 0


def metrics_file_corrupt(s: Snapshot, now: float, history: History) -> dict[LabelSet, float]:
    """``bfm_exporter_corrupt_files_total and increase(...[1h]) > 0``; value: the
    exporter's count of corrupt files since it started."""
    return {ls: v for ls, v in s.series(CORRUPT_COUNTER).items()
            if counter_increased(history.corrupt_samples.get(ls, []))}


def oom_death(s: Snapshot, now: float, history: History) -> dict[LabelSet, float]:
    """``bfm_worker_oom_timestamp_seconds > 0``; value: the OOM's time."""
    return {ls: v for ls, v in s.series("bfm_worker_oom_timestamp_seconds").items() if v > 0}


def _annotations(summary: str, description: str, anchor: str) -> dict[str, str]:
    return {"summary": summary, "description": description,
            "runbook_url": f"{RUNBOOK_URL}#{anchor}"}


RULES: tuple[Rule, ...] = (
    Rule("BFMShardCrawl", crawl, {"severity": "critical"}, _annotations(
        "Shard {{ $labels.shard }} ({{ $labels.stage }}) crawls on {{ $labels.device }} "
        "with spill evidence",
        "Worker {{ $labels.shard }}/{{ $labels.stage }} on {{ $labels.device }} "
        "(pid {{ $labels.pid }}) has run at "
        "{{ $value | humanizePercentage }} of its own baseline rate for at least "
        "HELIX_BFM_CRAWL_WINDOW consecutive batches while GPU {{ $labels.gpu }} shows spill "
        "evidence (dedicated VRAM full, shared GPU memory held, or torch reserving more than "
        "the card has): the driver is spilling into shared system memory. "
        "crawlguard restarts the worker, then demotes the shard to CPU.",
        "bfmshardcrawl")),
    Rule("BFMShardStalled", stalled, {"severity": "critical"}, _annotations(
        "Shard {{ $labels.shard }} ({{ $labels.stage }}) stalled in one batch on "
        "{{ $labels.device }} with spill evidence",
        "The in-flight batch of {{ $labels.shard }}/{{ $labels.stage }} on "
        "{{ $labels.device }} (pid {{ $labels.pid }}) has been running for "
        "{{ $value | humanizeDuration }}, as long "
        "as a whole window of crawling batches would take, while GPU "
        "{{ $labels.gpu }} shows spill evidence. crawlguard treats it like a crawl.",
        "bfmshardstalled")),
    Rule("BFMShardCrawlOnCPU", crawl_on_cpu, {"severity": "info"}, _annotations(
        "Shard {{ $labels.shard }} ({{ $labels.stage }}) still crawls on CPU",
        "Worker {{ $labels.shard }}/{{ $labels.stage }} on {{ $labels.device }} has run at "
        "{{ $value | humanizePercentage }} of its own CPU baseline for at least "
        "HELIX_BFM_CRAWL_WINDOW consecutive batches. The escalation ladder has no rung "
        "left; look at the host (CPU starvation, swapping) and the shard's input.",
        "bfmshardcrawloncpu")),
    Rule("BFMMetricsAbsent", metrics_absent, {"severity": "warning"}, _annotations(
        "crawlguard metrics of {{ $labels.instance }} are gone",
        "{{ $labels.instance }} (job {{ $labels.job }}) served bfm_batches_total within the "
        "last hour and serves none now: the exporter is down or unreachable, or the state "
        "directory it reads was removed. Crawls are not detected until its metrics are back.",
        "bfmmetricsabsent"), for_s=120.0),
    Rule("BFMShardOOM", oom_death, {"severity": "critical"}, _annotations(
        "Worker {{ $labels.pid }} of shard {{ $labels.shard }} ({{ $labels.stage }}) died of "
        "GPU out-of-memory on {{ $labels.device }}",
        "The worker {{ $labels.worker }} of {{ $labels.shard }}/{{ $labels.stage }} on "
        "{{ $labels.device }} raised torch's out-of-memory error and is gone: with sysmem "
        "fallback off, this is how a VRAM spill ends. crawlguard treats it like a crawl: the "
        "relaunch is the restart rung, a second OOM death demotes the shard to CPU.",
        "bfmshardoom")),
    Rule("BFMMetricsFileCorrupt", metrics_file_corrupt, {"severity": "warning"}, _annotations(
        "A crawlguard metrics file on {{ $labels.instance }} was corrupt",
        "The exporter {{ $labels.instance }} (job {{ $labels.job }}) found a metrics file it "
        "could not read within the last hour (bfm_exporter_corrupt_files_total rose) and "
        "moved it to metrics/quarantine/. A live worker writes a new one within about a "
        "second; until then its crawl could not be seen. Find out what damaged the state "
        "directory (a full disk, a copy, another program).",
        "bfmmetricsfilecorrupt")),
)

def with_runbook(base: str) -> tuple[Rule, ...]:
    """``RULES`` with their runbook links moved from the shipped base to ``base``."""
    return tuple(replace(r, annotations={
        k: (base + v[len(RUNBOOK_URL):] if k == "runbook_url" and v.startswith(RUNBOOK_URL) else v)
        for k, v in r.annotations.items()}) for r in RULES)


ACTIONABLE = ("BFMShardCrawl", "BFMShardStalled", "BFMShardOOM")
"""The alerts the sidecar acts on (the Alertmanager route sends only these)."""
