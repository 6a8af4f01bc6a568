"""One worker of the reference rebuild: backfill one shard, resumably.

The shape docs/integration.md asks of a real build:

1. on start, skip every input file whose output is complete (file-level resume)
   and delete temporaries a killed predecessor left;
2. ``CrawlTracker(shard, stage="backfill", device=...)`` and one
   ``with tracker.batch(genes=n):`` around each batch;
3. the device from BGEM3_DEVICE (or HELIX_BFM_DEVICE_VAR's variable), which
   the CPU rung sets to ``cpu`` in the resume environment;
4. on SIGTERM (SIGBREAK on Windows, SIGINT too) abandon the batch in flight,
   keep every finished file (already atomic on disk) and exit 128+signal:
   non-zero, so the supervisor resumes the shard instead of calling it done.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from crawlguard.exporter.tracker import CrawlTracker
from crawlguard.gpu.vram import GpuMemory
from crawlguard.kernel.devices import DEFAULT_DEVICE, launch_device, physical_gpu
from crawlguard.kernel.errors import ConfigError
from crawlguard.kernel.settings import device_var_from_env
from crawlguard.kernel.stopevent import StopEvent

from .corpus import input_dir, load_manifest, read_genes, shard_root
from .profiles import Timing, get_profile
from .simdevice import EventLog, Interrupted, SimDevice
from .simgpu import Claim, SimGpu
from .store import is_complete, output_path, remove_stale_temporaries, write_output
from .vectors import embed_batch


@dataclass(frozen=True)
class WorkerOptions:
    data_dir: Path
    shard: str
    device: str
    profile: str | None = None
    """Overrides the manifest's profile."""
    timing: Timing = field(default_factory=Timing)
    simgpu_dir: Path | None = None
    """Simulated GPU to claim memory on; None: no VRAM is simulated."""


class SimTorchMemory:
    """What ``torch.cuda`` would report inside a simulated worker, for the
    tracker's ``bfm_worker_vram_reserved_bytes``: the caching allocator holds the
    context's dedicated bytes plus whatever spilled, so a spilled context
    reserves more than the card has (the spill seen from inside)."""

    name = "simulated-torch"

    def __init__(self, claim: Claim, index: int, total_bytes: int) -> None:
        self.claim, self.index, self.total_bytes = claim, index, total_bytes

    def read(self) -> list[GpuMemory]:
        held = self.claim.bytes
        return [GpuMemory(self.index, held, self.total_bytes, held + self.claim.shared_bytes,
                          held)]


def device_from_env(env: Mapping[str, str]) -> str:
    """The device the build was told to use; ``cuda`` means ``cuda:0``."""
    var = device_var_from_env(env)
    device = launch_device(env, var)
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(var, device, "the reference rebuild runs on cpu or cuda[:N]")
    return device


class StopSignal:
    """Turns the graceful signals into an Event and remembers which one came."""

    def __init__(self) -> None:
        self.event = StopEvent()  # a handler must not take the event's lock
        self.signum: int | None = None

    def install(self) -> None:
        signals = [signal.SIGTERM, signal.SIGINT]
        if hasattr(signal, "SIGBREAK"):  # Windows: CTRL_BREAK_EVENT to our process group
            signals.append(signal.SIGBREAK)
        for sig in signals:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self.event.request()

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)


def run_worker(opts: WorkerOptions, stop: threading.Event, env: Mapping[str, str]) -> int:
    """Backfill the shard; returns the genes written by this worker.

    Raises ``Interrupted`` when ``stop`` is set before the shard is complete.
    """
    manifest = load_manifest(opts.data_dir, opts.shard)
    profile = get_profile(opts.profile or manifest.profile)
    remove_stale_temporaries(opts.data_dir, opts.shard)
    per_file = manifest.genes // max(1, len(manifest.files))
    todo = [name for name in manifest.files
            if not is_complete(output_path(opts.data_dir, opts.shard, name), per_file)]
    if not todo:
        return 0
    claim, memory = None, None
    if opts.simgpu_dir is not None:
        gpu_device = opts.device if opts.device != "cpu" else DEFAULT_DEVICE
        simgpu = SimGpu(opts.simgpu_dir)
        claim = Claim(simgpu, int(physical_gpu(gpu_device, env) or 0))
        total = next((g["total_bytes"] for g in simgpu.gpus() if g["index"] == claim.index), 0)
        if opts.device != "cpu" and total:
            memory = SimTorchMemory(claim, int(gpu_device.partition(":")[2] or 0), total)
    tracker = CrawlTracker(opts.shard, stage="backfill", device=opts.device, env=env,
                           memory=memory, total=per_file * len(todo))
    events = EventLog(shard_root(opts.data_dir, opts.shard) / "sim.jsonl")
    total_batches = math.ceil(manifest.genes / manifest.batch_size)
    sim = SimDevice(opts.device, profile, total_batches, opts.timing, seed=opts.shard,
                    claim=claim, events=events)
    written = 0
    try:
        sim.load(stop)
        for name in todo:
            genes = read_genes(input_dir(opts.data_dir, opts.shard) / name)
            vectors: list[tuple[str, bytes]] = []
            for start in range(0, len(genes), manifest.batch_size):
                batch = genes[start:start + manifest.batch_size]
                if stop.is_set():
                    raise Interrupted
                with tracker.batch(genes=len(batch)):
                    vecs = embed_batch([text for _, text in batch])
                    sim.run_batch(len(batch), stop)
                vectors.extend(zip([gid for gid, _ in batch], vecs, strict=True))
            # The file is complete: one atomic write. A stop from here on waits
            # for it, so the salvage keeps everything finished.
            write_output(output_path(opts.data_dir, opts.shard, name), name, opts.device,
                         vectors)
            written += len(vectors)
    except Interrupted:
        sim.finish("stop", written=written)
        raise
    finally:
        tracker.close()
    sim.finish("done", written=written)
    return written
