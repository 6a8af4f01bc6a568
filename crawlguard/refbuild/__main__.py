"""``python -m crawlguard.refbuild``: generate, work, verify, simgpu.

    python -m crawlguard.refbuild generate --data D --demo
    python -m crawlguard.refbuild generate --data D --shard S --files 10 --genes 40 \
        --profile incident1
    python -m crawlguard.refbuild work --data D --shard S [--simgpu DIR] [--time-scale 10]
    python -m crawlguard.refbuild verify --data D --shard S [--shard S ...] [--json]
    python -m crawlguard.refbuild simgpu --dir DIR          # a standalone simulated driver

``work`` is what a supervisor runs (``crawlguard run --shard S -- python -m
crawlguard.refbuild work --data D --shard {shard}``). Exit codes of ``work``: 0
shard complete, 128+N stopped by signal N before completing (resume it),
1 unexpected failure, 2 bad input or knob.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from crawlguard.kernel.errors import ConfigError, CrawlguardError

from .corpus import DEMO_SHARDS, ShardSpec, generate
from .profiles import PROFILES, Timing
from .simdevice import Interrupted
from .simgpu import Driver, SimGpu
from .verify import verify_shard
from .worker import StopSignal, WorkerOptions, device_from_env, run_worker


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m crawlguard.refbuild",
                                description="crawlguard's reference rebuild")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write a deterministic input corpus")
    g.add_argument("--data", type=Path, required=True)
    g.add_argument("--demo", action="store_true", help="the demo's three shards")
    g.add_argument("--shard")
    g.add_argument("--files", type=int, default=10)
    g.add_argument("--genes", type=int, default=40, help="genes per file")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--profile", choices=sorted(PROFILES), default="healthy")
    w = sub.add_parser("work", help="backfill one shard (what a supervisor runs)")
    w.add_argument("--data", type=Path, required=True)
    w.add_argument("--shard", default=os.environ.get("HELIX_BFM_SHARD"))
    w.add_argument("--profile", choices=sorted(PROFILES), help="override the manifest's")
    w.add_argument("--time-scale", type=float, default=Timing.time_scale)
    w.add_argument("--cpu-factor", type=float, default=Timing.cpu_factor)
    w.add_argument("--simgpu", type=Path, default=os.environ.get("HELIX_BFM_SIMGPU_DIR") or None,
                   help="simulated GPU directory (default HELIX_BFM_SIMGPU_DIR)")
    v = sub.add_parser("verify", help="the lossless verdict of shards")
    v.add_argument("--data", type=Path, required=True)
    v.add_argument("--shard", action="append", required=True)
    v.add_argument("--json", action="store_true")
    s = sub.add_parser("simgpu", help="run a simulated GPU driver until stopped")
    s.add_argument("--dir", type=Path, required=True)
    s.add_argument("--release-delay", type=float, default=0.3)
    return p


def _generate(args: argparse.Namespace) -> int:
    if args.demo:
        specs = list(DEMO_SHARDS)
    elif args.shard:
        specs = [ShardSpec(args.shard, args.files, args.genes, args.profile, args.batch_size)]
    else:
        raise ConfigError("--shard", None, "give --demo or --shard")
    for spec in specs:
        m = generate(args.data, spec)
        print(f"{m.shard}: {len(m.files)} files, {m.genes} genes, profile {m.profile}")
    return 0


def _work(args: argparse.Namespace) -> int:
    if not args.shard:
        raise ConfigError("--shard", None, "give --shard or set HELIX_BFM_SHARD")
    for flag, value in (("--time-scale", args.time_scale), ("--cpu-factor", args.cpu_factor)):
        if not value > 0:
            raise ConfigError(flag, value, "must be > 0")
    stop = StopSignal()
    stop.install()
    opts = WorkerOptions(
        data_dir=args.data, shard=args.shard, device=device_from_env(os.environ),
        profile=args.profile, simgpu_dir=args.simgpu,
        timing=Timing(time_scale=args.time_scale, cpu_factor=args.cpu_factor))
    print(f"refbuild worker pid {os.getpid()}: shard {opts.shard} on {opts.device}", flush=True)
    try:
        written = run_worker(opts, stop.event, os.environ)
    except Interrupted:
        print(f"refbuild worker pid {os.getpid()}: stopped by signal {stop.signum}; finished "
              "files are kept, the rest is redone on resume", flush=True)
        return stop.exit_code
    print(f"refbuild worker pid {os.getpid()}: shard {opts.shard} complete "
          f"({written} genes written by this worker)", flush=True)
    return 0


def _verify(args: argparse.Namespace) -> int:
    verdicts = [verify_shard(args.data, shard) for shard in args.shard]
    if args.json:
        print(json.dumps({v.shard: v.as_dict() for v in verdicts}, indent=2, sort_keys=True))
    else:
        for v in verdicts:
            print(f"{v.shard}: {'lossless' if v.lossless else 'NOT lossless'} "
                  f"({v.present}/{v.expected} genes, {v.missing} missing, {v.duplicated} "
                  f"duplicated, {v.mismatched} differ, {v.unexpected} unexpected)")
    return 0 if all(v.lossless for v in verdicts) else 1


def _simgpu(args: argparse.Namespace) -> int:
    gpu = SimGpu(args.dir)
    if not gpu.config_file.exists():
        gpu.configure()
    stop = StopSignal()
    stop.install()
    print(f"simulated GPU driver: HELIX_BFM_VRAM_SOURCE={gpu.source_spec}", flush=True)
    Driver(gpu, release_delay=args.release_delay).run(stop.event)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"generate": _generate, "work": _work, "verify": _verify, "simgpu": _simgpu}
    try:
        return handlers[args.command](args)
    except CrawlguardError as exc:
        print(f"refbuild {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
