"""`crawlguard demo`: `up` on the reference rebuild, then the verdict.

Three shards of the reference rebuild (crawlguard.refbuild.corpus.DEMO_SHARDS):
``confluence`` decays like incident 1, ``slack__eng-oncall`` collapses like
incident 2 and collapses again after its restart, ``jira`` is healthy. They
run on a simulated 12 GB GPU with every part of crawlguard: exporter, sidecar,
real Prometheus + Alertmanager when installed (else the embedded evaluation),
and the supervisor. The knobs are the defaults (the demo ignores HELIX_BFM_*
from the shell so it shows what a fresh install does); only time is scaled,
and the scrape/evaluation interval is shortened to match.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from crawlguard.kernel.settings import Settings
from crawlguard.kernel.statedir import StateDir
from crawlguard.refbuild.corpus import DEMO_SHARDS, generate
from crawlguard.refbuild.profiles import Timing
from crawlguard.refbuild.store import output_dir, read_output
from crawlguard.refbuild.verify import verify_shard

from .promstack import AmTiming, resolve_alert_path
from .shardview import read_ladder, summarise_batches
from .up import RigConfig, RunningRig

DEVICE_VAR = "BGEM3_DEVICE"


@dataclass(frozen=True)
class ShardResult:
    shard: str
    genes: int
    crawls: int
    rungs: list[str]
    final_device: str
    lost_seconds: float
    lossless: bool

    def contract(self) -> dict[str, Any]:
        """The ``--json`` shape: the summary's figures, one key each."""
        return {"genes": self.genes, "crawls": self.crawls, "rungs": self.rungs,
                "final_device": self.final_device, "lossless": self.lossless}


@dataclass(frozen=True)
class DemoResult:
    alert_path: str
    rc: int
    wall_seconds: float
    shards: list[ShardResult]
    time_scale: float = Timing.time_scale

    @property
    def lossless(self) -> bool:
        return bool(self.shards) and all(s.lossless for s in self.shards)

    @property
    def exit_code(self) -> int:
        return self.rc if self.rc != 0 else (0 if self.lossless else 1)

    def contract(self) -> dict[str, Any]:
        return {"alert_path": self.alert_path, "lossless": self.lossless,
                "shards": {s.shard: s.contract() for s in self.shards}}


class DistinctGenes:
    """Distinct genes in a shard's finished outputs, for the live view: what the summary
    counts, so the two never disagree. Each output file is parsed once per version."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self._files: dict[Path, tuple[int, frozenset[str]]] = {}

    def __call__(self, shard: str) -> int:
        genes: set[str] = set()
        for path in output_dir(self.data, shard).glob("*.json"):
            try:
                mtime = path.stat().st_mtime_ns
            except OSError:
                continue
            cached = self._files.get(path)
            if cached is None or cached[0] != mtime:
                found = read_output(path) or []
                cached = self._files[path] = (mtime, frozenset(g for g, _ in found))
            genes |= cached[1]
        return len(genes)


def clean_env(env: dict[str, str]) -> dict[str, str]:
    """The shell's environment without crawlguard's knobs and the device variable."""
    return {k: v for k, v in env.items()
            if not k.startswith("HELIX_BFM_") and k != DEVICE_VAR}


def run_demo(root: Path, env: dict[str, str], alert_path: str, stop: threading.Event,
             stream: TextIO, progress: str = "auto", time_scale: float = 10.0) -> DemoResult:
    path, _ = resolve_alert_path(alert_path)
    data = root / "refbuild"
    for spec in DEMO_SHARDS:
        generate(data, spec)
    shards = tuple(spec.shard for spec in DEMO_SHARDS)
    env = clean_env(env)
    # The demo's scaled time needs a scaled loop: batches take ~50 ms, not seconds.
    interval = 1.0 if path == "prometheus" else 0.5
    config = RigConfig(
        shards=shards,
        command=(sys.executable, "-m", "crawlguard.refbuild", "work", "--data", str(data),
                 "--shard", "{shard}", "--time-scale", f"{time_scale:g}"),
        settings=Settings.from_env({**env, "HELIX_BFM_STATE_DIR": str(root)}), env=env,
        # The requested path, not the resolved one: the rig resolves it again and
        # so tells the real reason (a resolved "embedded" would read as asked for).
        alert_path=alert_path, interval=interval,
        am_timing=AmTiming(group_wait=1.0, group_interval=2.0, repeat_interval=10.0),
        simulate_gpu=True, progress=progress, progress_period=10.0, progress_prefix="demo",
        vram_log_interval=0.5, unique_genes=DistinctGenes(data))
    started = time.monotonic()
    rc = RunningRig(config, stream).run(stop)
    wall = time.monotonic() - started
    return DemoResult(path, rc, wall, [shard_result(root, data, s) for s in shards], time_scale)


def shard_result(root: Path, data: Path, shard: str) -> ShardResult:
    state = StateDir(root)
    verdict = verify_shard(data, shard)
    ladder = read_ladder(state, shard)
    batches = summarise_batches(state, shard)
    return ShardResult(shard=shard, genes=verdict.present, crawls=ladder.crawls,
                       rungs=ladder.rung_names, final_device=batches.final_device,
                       lost_seconds=batches.lost_seconds, lossless=verdict.lossless)


def render(result: DemoResult, kept: Path | None) -> str:
    rows = [f"{'shard':<20} {'genes':>6} {'crawls':>6}  {'rungs':<13} {'final device':<12} "
            f"{'time lost':>9}  lossless"]
    for s in result.shards:
        rows.append(f"{s.shard:<20} {s.genes:>6} {s.crawls:>6}  {','.join(s.rungs) or '-':<13} "
                    f"{s.final_device or '-':<12} {s.lost_seconds:>8.1f}s  "
                    f"{'yes' if s.lossless else 'NO'}")
    total = sum(s.genes for s in result.shards)
    verdict = ("lossless: every gene exactly once, byte-identical to a clean computation"
               if result.lossless else "NOT lossless: see the shards marked NO")
    rows += ["", f"{verdict} ({total} genes, {len(result.shards)} shards)",
             f"alert path: {result.alert_path}; wall time {result.wall_seconds:.1f}s "
             f"(simulated time runs {result.time_scale:g}x faster than the incidents)",
             "time lost: wall time beyond each shard's own baseline pace (crawling, work "
             "redone after a restart, the restarts)"]
    if result.rc != 0:
        rows.append(f"the supervisor ended with exit status {result.rc}")
    rows.append(f"state dir kept: {kept}" if kept else
                "state dir removed (crawlguard demo --state-dir DIR keeps it)")
    return "\n".join(rows)


def temp_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="crawlguard-demo-"))


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
