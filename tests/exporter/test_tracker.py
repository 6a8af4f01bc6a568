"""CrawlTracker driven with an injected clock through the incidents' dynamics."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from crawlguard import CrawlTracker
from crawlguard.exporter.collector import WorkerCollector
from crawlguard.kernel.settings import Detection
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.workers import WorkerIdentity, read_registration

DET = Detection()  # the contract defaults: factor 5, window 8


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(tracker: CrawlTracker, clock: FakeClock, rate: float, batches: int,
        genes: int = 64) -> list[bool]:
    """Run ``batches`` batches at ``rate`` genes/s through the context manager."""
    seen = []
    for _ in range(batches):
        with tracker.batch(genes=genes):
            clock.now += genes / rate
        seen.append(tracker.crawling)
    return seen


def samples(state: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for metric in WorkerCollector(state / "metrics").collect():
        for s in metric.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(state: Path, name: str, **labels: str) -> float | None:
    for (n, ls), v in samples(state).items():
        if n == name and all(dict(ls).get(k) == x for k, x in labels.items()):
            return v
    return None


def make(state: Path, clock: FakeClock, device: str = "cuda:0", shard: str = "confluence",
         **kw: object) -> CrawlTracker:
    return CrawlTracker(shard=shard, stage="backfill", device=device, state_dir=state,
                        detection=Detection(**kw) if kw else DET, clock=clock, env={})


def test_warmup_is_ignored_and_baseline_is_the_median(state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock)
    run(t, clock, rate=0.5, batches=DET.warmup_batches)  # model load: very slow
    assert t.baseline is None and t.ema is None
    for r in (15.0, 16.0, 14.0, 40.0, 15.3):  # one outlier does not move a median
        run(t, clock, rate=r, batches=1)
    assert t.baseline == pytest.approx(15.3)
    assert value(state_dir, "bfm_genes_per_second_baseline", shard="confluence") \
        == pytest.approx(15.3)
    saved = json.loads((state_dir / "shards/confluence/baseline-backfill-cuda0.json").read_text())
    assert saved["baseline"] == pytest.approx(15.3)


def test_baseline_absent_until_established(state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock)
    run(t, clock, rate=15.0, batches=DET.warmup_batches + DET.baseline_batches - 1)
    assert value(state_dir, "bfm_genes_per_second_baseline") is None
    assert value(state_dir, "bfm_genes_per_second_ema") is not None
    run(t, clock, rate=15.0, batches=1)
    assert value(state_dir, "bfm_genes_per_second_baseline") == pytest.approx(15.0)


def test_healthy_variance_never_starts_a_streak(state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock)
    run(t, clock, rate=15.3, batches=10)
    # Long shards have long batches: +-50 % swings and a lone 10x-slow batch are not a crawl.
    for r in [8.0, 22.0, 10.0, 1.5, 15.0, 9.0, 25.0, 7.7, 1.6, 14.0] * 5:
        run(t, clock, rate=r, batches=1)
        assert t.streak == 0
    assert not t.crawling


def test_incident_1_decay_reaches_the_window(state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock)
    run(t, clock, rate=15.3, batches=10)
    decay = [15.3 - (15.3 - 2.3) * i / 6 for i in range(1, 7)]  # 15.3 -> 2.3 over six batches
    assert not any(run(t, clock, rate=r, batches=1)[0] for r in decay)
    flags = run(t, clock, rate=2.3, batches=20)
    first = flags.index(True)
    assert t.crawling and t.streak >= DET.window
    # Detected within the window plus the EMA's lag, not hours later.
    assert first <= DET.window + 6
    assert value(state_dir, "bfm_crawl_streak_batches") == t.streak
    assert value(state_dir, "bfm_crawl_window_batches") == 8
    assert value(state_dir, "bfm_crawl_factor") == 5


def test_incident_2_collapse(state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock, shard="slack__eng-oncall")
    run(t, clock, rate=15.0, batches=10)
    flags = run(t, clock, rate=0.02, batches=12)
    # alpha 0.5 halves the EMA per batch: below baseline/5 on the third slow batch.
    assert flags.index(True) == DET.window + 1
    assert t.ema is not None and t.ema < t.baseline / DET.factor  # type: ignore[operator]


def test_streak_one_short_of_the_window_is_not_a_crawl(state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock)
    run(t, clock, rate=15.0, batches=10)
    while t.streak < DET.window - 1:
        run(t, clock, rate=0.5, batches=1)
    assert not t.crawling
    run(t, clock, rate=0.5, batches=1)
    assert t.crawling
    run(t, clock, rate=15.0, batches=3)  # recovery resets the streak
    assert t.streak == 0 and not t.crawling


def test_restart_mid_shard_reuses_the_persisted_baseline(state_dir: Path) -> None:
    clock = FakeClock()
    first = make(state_dir, clock)
    run(first, clock, rate=15.3, batches=10)
    run(first, clock, rate=2.3, batches=5)
    # The restarted worker spills again at once: it must not adopt a crawling baseline.
    second = make(state_dir, clock)
    assert second.baseline == pytest.approx(15.3)
    flags = run(second, clock, rate=2.3, batches=DET.warmup_batches + DET.window + 2)
    assert flags[-1] and second.baseline == pytest.approx(15.3)


def test_cpu_device_gets_its_own_baseline(state_dir: Path) -> None:
    clock = FakeClock()
    gpu = make(state_dir, clock)
    run(gpu, clock, rate=15.3, batches=10)
    cpu = make(state_dir, clock, device="cpu")
    assert cpu.baseline is None
    run(cpu, clock, rate=1.1, batches=DET.warmup_batches + DET.baseline_batches + 10)
    assert cpu.baseline == pytest.approx(1.1)
    assert not cpu.crawling  # slow but steady is the CPU's normal
    assert value(state_dir, "bfm_genes_per_second_baseline", device="cpu", gpu="") \
        == pytest.approx(1.1)
    assert value(state_dir, "bfm_genes_per_second_baseline", device="cuda:0", gpu="0") \
        == pytest.approx(15.3)


@pytest.mark.parametrize("content", ['{"baseline": 15', '{"baseline": -1}', '[]', '\x00\x01',
                                     '{"baseline": "fast"}', '{"baseline": Infinity}'])
def test_corrupt_baseline_is_ignored_with_a_warning(state_dir: Path, content: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    path = state_dir / "shards/confluence/baseline-backfill-cuda0.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with caplog.at_level(logging.WARNING, "crawlguard.exporter.baseline"):
        t = make(state_dir, FakeClock())
    assert t.baseline is None
    assert "ignoring baseline" in caplog.text


def test_inflight_batch_and_failed_batch(state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock)
    with t.batch(genes=64):
        assert value(state_dir, "bfm_batch_inflight_genes") == 64
        assert value(state_dir, "bfm_batch_started_timestamp_seconds") == clock.now
        clock.now += 4.2
    assert value(state_dir, "bfm_batch_inflight_genes") == 0
    with pytest.raises(RuntimeError), t.batch(genes=32):
        raise RuntimeError("CUDA error")
    assert value(state_dir, "bfm_batch_inflight_genes") == 0
    assert value(state_dir, "bfm_batches_total") == 1  # the failed batch is not counted


def test_observe_for_already_timed_batches(state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock)
    v = t.observe(genes=64, seconds=4.2)
    assert v.rate == pytest.approx(64 / 4.2)
    assert value(state_dir, "bfm_genes_total") == 64
    assert value(state_dir, "bfm_genes_per_second") == pytest.approx(64 / 4.2)
    with pytest.raises(ValueError):
        t.observe(genes=-1, seconds=1)
    with pytest.raises(ValueError):
        t.observe(genes=1, seconds=float("nan"))


def test_creating_a_tracker_registers_the_worker(state_dir: Path) -> None:
    make(state_dir, FakeClock(), shard="jira")
    reg = read_registration(StateDir(state_dir), "jira")
    assert reg is not None and reg.pid == os.getpid()
    assert reg.identity == WorkerIdentity.current()


def test_several_trackers_in_one_process(state_dir: Path) -> None:
    clock = FakeClock()
    drain = CrawlTracker("confluence", "drain", "cuda:0", state_dir=state_dir, clock=clock, env={})
    back = CrawlTracker("confluence", "backfill", "cuda:0", state_dir=state_dir, clock=clock,
                        env={})
    other = CrawlTracker("jira", "backfill", "cuda:1", state_dir=state_dir, clock=clock, env={})
    drain.observe(10, 1.0)
    back.observe(20, 1.0)
    other.observe(30, 1.0)
    assert value(state_dir, "bfm_genes_total", stage="drain") == 10
    assert value(state_dir, "bfm_genes_total", stage="backfill", shard="confluence") == 20
    assert value(state_dir, "bfm_genes_total", shard="jira", gpu="1") == 30


def test_cuda_visible_devices_maps_the_gpu_label(state_dir: Path) -> None:
    t = CrawlTracker("confluence", device="cuda:1", state_dir=state_dir, clock=FakeClock(),
                     env={"CUDA_VISIBLE_DEVICES": "2,3"})
    assert t.gpu == "3"


def test_bad_names_and_knobs_refuse_before_any_write(state_dir: Path) -> None:
    from crawlguard.kernel.errors import ConfigError, UnsafeNameError

    with pytest.raises(UnsafeNameError):
        CrawlTracker("../etc", state_dir=state_dir, env={})
    with pytest.raises(ConfigError, match="HELIX_BFM_CRAWL_FACTOR"):
        CrawlTracker("ok", state_dir=state_dir, env={"HELIX_BFM_CRAWL_FACTOR": "0.5"})
    assert not (state_dir / "shards").exists()


def test_batches_log_lines_are_json(state_dir: Path) -> None:
    clock = FakeClock()
    t = make(state_dir, clock)
    run(t, clock, rate=15.0, batches=8)
    t.close()
    lines = (state_dir / "shards/confluence/batches.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 8 and rows[-1]["baseline"] == pytest.approx(15.0)
    assert rows[0]["ema"] is None and rows[-1]["genes"] == 64


def test_worker_info_names_each_live_worker_once(state_dir: Path) -> None:
    """Two live identity files of one series: the newest worker's pid is served (the
    rules join on it with group_left); an unreadable file is skipped, not fatal."""
    from crawlguard.exporter import catalog
    from crawlguard.exporter.collector import WorkerInfoCollector
    from crawlguard.exporter.mpfiles import MetricsFile, encode_key

    metrics = state_dir / "metrics"
    metrics.mkdir(parents=True)
    labels = dict(zip(catalog.WORKER_LABELS, ["s", "backfill", "cuda:0", "0"], strict=True))
    for key in ("10-1000", "20-2000", "30-500"):
        d = MetricsFile(metrics / f"gauge_livemostrecent_{key}.db")
        d.write_value(encode_key("bfm_crawl_factor", "bfm_crawl_factor", labels, ""), 5.0, 1.0)
        if key == "30-500":
            d.write_value(encode_key("bfm_crawl_factor", "bfm_crawl_factor",
                                     dict(zip(catalog.WORKER_LABELS, ["t", "backfill", "cpu", ""],
                                              strict=True)), ""), 5.0, 1.0)
        d.close()
    (metrics / "gauge_livemostrecent_40-4000.db").write_bytes(b"\xff" * 8)
    (family,) = WorkerInfoCollector(metrics).collect()
    got = {tuple(sorted(s.labels.items())): s.value for s in family.samples}
    assert got == {
        (("device", "cuda:0"), ("gpu", "0"), ("pid", "20"), ("shard", "s"),
         ("stage", "backfill")): 1.0,
        (("device", "cpu"), ("gpu", ""), ("pid", "30"), ("shard", "t"),
         ("stage", "backfill")): 1.0,
    }


def test_a_memory_stand_in_publishes_reserved_bytes_for_gpu_workers(state_dir: Path) -> None:
    """``memory`` replaces torch's view (the simulated GPU uses it): its reservation
    becomes bfm_worker_vram_reserved_bytes; a CPU worker never asks it."""
    from crawlguard.gpu.vram import GpuMemory

    class Reserved:
        name = "stand-in"
        reads = 0

        def read(self) -> list[GpuMemory]:
            Reserved.reads += 1
            return [GpuMemory(0, 11 * 2**30, 12 * 2**30, 13 * 2**30, 11 * 2**30)]

    clock = FakeClock()
    gpu = CrawlTracker("s", "backfill", "cuda:0", state_dir=state_dir, detection=DET,
                       clock=clock, env={}, memory=Reserved())
    cpu = CrawlTracker("c", "backfill", "cpu", state_dir=state_dir, detection=DET,
                       clock=clock, env={}, memory=Reserved())
    run(gpu, clock, rate=10.0, batches=1)
    assert value(state_dir, "bfm_worker_vram_reserved_bytes", shard="s") == 13 * 2**30
    assert value(state_dir, "bfm_worker_vram_allocated_bytes", shard="s") == 11 * 2**30
    reads = Reserved.reads
    run(cpu, clock, rate=10.0, batches=2)
    assert Reserved.reads == reads
    assert value(state_dir, "bfm_worker_vram_reserved_bytes", shard="c") is None
