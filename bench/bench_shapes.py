"""The crawl signature on corpus shapes of real rebuilds: margins and detection.

    .venv/bin/python bench/bench_shapes.py [--traces PATH] [--shape NAME ...]

Two steps:

1. **Record** (unless ``--traces`` names a file that exists, which is then
   read): real sentence-transformers encodes of a 2-layer XLM-R (hidden 128,
   random weights, built here: no model hub), one ``encode`` per input file,
   batch size 32 (8 for the one sorted call), torch on one thread, over the
   corpus shapes of ``shapes()``. Every
   forward's padded shape, its texts' lengths and its CPU time are recorded
   (``--traces`` saves them).
2. **Replay** each trace through ``tracker.instrument`` on a stand-in module
   whose forward takes the recorded time on the tracker's clock, with the
   default knobs (factor 5, window 8): the exact batches a build would feed
   the tracker, timed without the noise of a shared machine. Once healthy, and
   once 10x slower from 30 %, 50 % and 70 % of the batches on (an evenly
   spread slowdown, as a spill or a CPU quota gives).

Printed per shape: the lowest EMA/baseline ratio of the healthy run (the crawl
threshold is 1/5 = 0.2), its longest streak, the largest duration / stall limit
of its batches (``stall``: at 1 or more, that healthy batch would have fired
BFMShardStalled with VRAM full), and for each slowdown the batches from its onset
to the crawl signature (``-``: not within the run).
Then the reference rebuild's incident profiles (``crawlguard.refbuild.profiles``,
8-gene batches judged in genes; ``incident1-abrupt`` drops to incident 1's floor
at once, as the seed's rule is sized on): the batches from the spill to the signature,
and how many stall limits the first crawling batch lasts (above 1: the stall
rule fires before it ends).

The replay uses only the build-side API, so the same traces can be replayed
through another version of crawlguard for before/after figures. Needs the
``libs`` extra. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from libsetup import offline

offline()

HIDDEN = 128
ONSETS = (0.3, 0.5, 0.7)
SLOWDOWN = 10.0
CHANGES = {"tiny_then_long": 15, "long_then_tiny": 15, "one_item_files": 10,
           "short_threads": 10}
"""Corpora of two kinds one after the other: how many files of the first kind."""
Files = list[list[int]]
"""A corpus: one list of text lengths (in tokens, [CLS] and [SEP] included) per file."""


def _lognormal(rng: random.Random, n: int, median: float = 120, lo: int = 3,
               hi: int = 1900) -> list[int]:
    return [min(hi, max(lo, round(rng.lognormvariate(math.log(median), 1.0))))
            for _ in range(n)]


def _uniform(rng: random.Random, n: int, lo: int, hi: int) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


def shapes(seed: int = 7) -> dict[str, tuple[Files, int, int]]:
    """name: (files, max_seq_length, batch size)."""
    rng = random.Random(seed)
    by_length = sorted(_lognormal(rng, 30 * 48), reverse=True)
    return {
        "lognormal": ([_lognormal(rng, 64) for _ in range(30)], 2048, 32),
        "tiny_then_long": ([_uniform(rng, 64, 3, 18) for _ in range(15)]
                           + [_uniform(rng, 16, 700, 1900) for _ in range(15)], 2048, 32),
        "long_then_tiny": ([_uniform(rng, 16, 700, 1900) for _ in range(15)]
                           + [_uniform(rng, 64, 3, 18) for _ in range(15)], 2048, 32),
        "chat_wiki": ([_uniform(rng, 64, 8, 20) if i % 2 == 0 else _uniform(rng, 16, 400, 1000)
                       for i in range(30)], 2048, 32),
        "longest_first": ([by_length[i:i + 48] for i in range(0, len(by_length), 48)], 2048, 32),
        "one_sorted_call": ([_uniform(rng, 256, 8, 1998)], 2048, 8),
        "truncation": ([_uniform(rng, 48, 200, 3000) for _ in range(25)], 512, 32),
        "many_small_files": ([_lognormal(rng, rng.randint(1, 8)) for _ in range(250)], 2048, 32),
        "one_item_files": ([_lognormal(rng, 64) for _ in range(10)]
                           + [_uniform(rng, 1, 3, 12) for _ in range(60)], 2048, 32),
        "short_threads": ([_lognormal(rng, 64) for _ in range(10)]
                          + [_uniform(rng, rng.randint(1, 4), 6, 30) for _ in range(60)], 2048, 32),
    }


def _trace(model: Any, files: Files, batch_size: int, rng: random.Random,
           ) -> list[dict[str, Any]]:
    """Encode each file once; every forward's lengths, padded length and CPU seconds."""
    from tests.libs import models
    rows: list[dict[str, Any]] = []
    started: list[float] = []

    def pre(module: Any, args: Any) -> None:
        started.append(time.process_time())

    def post(module: Any, args: Any, output: Any) -> None:
        mask = args[0]["attention_mask"]
        rows.append({"lengths": [int(v) for v in mask.sum(-1)], "longest": int(mask.shape[1]),
                     "seconds": time.process_time() - started.pop()})

    handles = [model.register_forward_pre_hook(pre), model.register_forward_hook(post)]
    try:
        for lengths in files:
            texts = [" ".join(rng.choice(models.WORDS) for _ in range(max(n - 2, 1)))
                     for n in lengths]
            model.encode(texts, batch_size=batch_size)
    finally:
        for handle in handles:
            handle.remove()
    return rows


def record(names: list[str]) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    from tests.libs import models
    torch.set_num_threads(1)
    rng = random.Random(1)
    traces: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = models.save_encoder(Path(tmp) / "xlmr", hidden=HIDDEN)
        for name in names:
            files, max_len, batch_size = shapes()[name]
            word = Transformer(str(directory), max_seq_length=max_len)
            model = SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension())],
                                        device="cpu")
            t0 = time.time()
            traces[name] = _trace(model, files, batch_size, rng)
            print(f"recorded {name}: {len(traces[name])} batches in {time.time() - t0:.0f} s",
                  file=sys.stderr, flush=True)
    return {"hidden": HIDDEN, "traces": traces}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _stall_limit(tracker: Any, rows: int, longest: int | None = None) -> float | None:
    """BFMShardStalled's limit for a batch of ``rows`` texts (padded to ``longest``) about
    to start: WINDOW x FACTOR x its work / the baseline (an earlier release: its genes)."""
    base = tracker.baseline
    if not base:
        return None
    work: float | None = float(rows)
    if hasattr(tracker, "ratio"):  # issue 17 on: the work the tracker publishes in flight
        from crawlguard.exporter.workmodel import genes_shape, padded_shape
        work = tracker._rate.work(genes_shape(rows) if longest is None
                                  else padded_shape(rows, longest))
    d = tracker.detection
    return None if work is None else d.window * d.factor * work / base


def replay(trace: list[dict[str, Any]], hidden: int, slow_from: int | None,
           ) -> tuple[float, int, int | None, float]:
    """(lowest EMA/baseline, longest streak, batches from the onset to the signature,
    the largest duration / stall limit of a batch)."""
    import torch

    from crawlguard import CrawlTracker
    from crawlguard.kernel.settings import Detection

    clock = Clock()
    factor = [1.0]
    step = [0.0]

    class Stand(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = type("Config", (), {"hidden_size": hidden})()

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            clock.now += step[0] * factor[0]
            return input_ids

    module = Stand()
    lowest, longest, caught, stalled = math.inf, 0, None, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        tracker = CrawlTracker("bench", "backfill", "cpu", state_dir=tmp, clock=clock,
                               detection=Detection())
        tracker.instrument(module)
        for i, batch in enumerate(trace):
            lengths = batch["lengths"]
            mask = torch.zeros((len(lengths), batch["longest"]), dtype=torch.long)
            for row, n in enumerate(lengths):
                mask[row, :n] = 1
            step[0] = batch["seconds"]
            factor[0] = SLOWDOWN if slow_from is not None and i >= slow_from else 1.0
            limit = _stall_limit(tracker, len(lengths), batch["longest"])
            if limit:
                stalled = max(stalled, step[0] * factor[0] / limit)
            module(input_ids=mask, attention_mask=mask)
            if tracker.baseline and tracker.ema is not None:
                lowest = min(lowest, tracker.ema / tracker.baseline)
            longest = max(longest, tracker.streak)
            if (caught is None and slow_from is not None
                    and tracker.streak >= tracker.detection.window):
                caught = i - slow_from + 1
        tracker.close()
    return lowest, longest, caught, stalled


def change_of_kind(name: str) -> int | None:
    """The first batch of a corpus's second kind (``CHANGES``), or None."""
    if name not in CHANGES:
        return None
    files, _, batch_size = shapes()[name]
    return sum(-(-len(lengths) // batch_size) for lengths in files[:CHANGES[name]])


def incident(profile_name: str, batches: int = 120, genes: int = 8) -> tuple[int | None, float]:
    """The reference rebuild's profile replayed through ``tracker.batch`` (genes only):
    (batches from the spill to the crawl signature, the first crawling batch's duration
    over its stall limit)."""
    from crawlguard import CrawlTracker
    from crawlguard.kernel.settings import Detection
    from crawlguard.refbuild.profiles import INCIDENT1_FLOOR, Profile, Timing, get_profile
    from crawlguard.refbuild.simdevice import SimDevice

    profile = (Profile("abrupt", "incident 1's floor at once", 0.6, lambda k: INCIDENT1_FLOOR)
               if profile_name == "incident1-abrupt" else get_profile(profile_name))
    sim = SimDevice("cuda:0", profile, batches, Timing(), seed=profile_name)
    clock = Clock()
    caught, stall = None, math.nan
    with tempfile.TemporaryDirectory() as tmp:
        tracker = CrawlTracker("bench", "backfill", "cuda:0", state_dir=tmp, clock=clock,
                               detection=Detection(), env={})
        for _ in range(batches):
            spilled_before = sim.spilled_after
            seconds = sim.step(genes)
            if spilled_before is not None and sim.batches - 1 == spilled_before:
                limit = _stall_limit(tracker, genes)
                stall = seconds / limit if limit else math.nan
            with tracker.batch(genes=genes):
                clock.now += seconds
            if sim.spilled_after is not None and caught is None and tracker.crawling:
                caught = sim.batches - sim.spilled_after
        tracker.close()
    return caught, stall


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--traces", type=Path, help="read the traces from here, or record and save")
    p.add_argument("--shape", action="append", choices=sorted(shapes()))
    args = p.parse_args()
    try:
        import torch
    except ImportError:
        print("needs the libs extra: pip install torch==2.13.0 && pip install -e '.[libs]'")
        return 2
    torch.set_num_threads(1)
    names = args.shape or list(shapes())
    data: dict[str, Any] = {"hidden": HIDDEN, "traces": {}}
    if args.traces is not None and args.traces.exists():
        data = json.loads(args.traces.read_text(encoding="utf-8"))
    missing = [n for n in names if n not in data["traces"]]
    if missing:
        data["traces"].update(record(missing)["traces"])
        if args.traces is not None:
            args.traces.write_text(json.dumps(data), encoding="utf-8")
    import crawlguard
    print(f"crawlguard from {Path(crawlguard.__file__).parent}; trace hidden {data['hidden']}")
    onsets = " ".join(f"{int(o * 100)}%" for o in ONSETS)
    print(f"{'shape':<18} {'batches':>7} {'min ratio':>9} {'streak':>6} {'stall':>6}   "
          f"batches to signature, {SLOWDOWN:.0f}x from {onsets}")
    for name in names:
        trace = data["traces"][name]
        lowest, longest, _, stalled = replay(trace, data["hidden"], None)
        caught = [replay(trace, data["hidden"], int(len(trace) * o))[2] for o in ONSETS]
        print(f"{name:<18} {len(trace):>7} {lowest:>9.2f} {longest:>6} {stalled:>6.2f}   "
              + " ".join(f"{'-' if c is None else c:>4}" for c in caught))
    print(f"{SLOWDOWN:.0f}x from the first batch of the second kind (never run): the first kind"
          " then returns, slowed too; batches from the onset to the signature (from the return)")
    for name in names:
        trace = data["traces"][name]
        change = change_of_kind(name)
        if change is None:
            continue
        caught = replay(trace + trace[:change], data["hidden"], change)[2]
        returned = None if caught is None else caught - (len(trace) - change)
        print(f"{name:<18} change at batch {change:>3}: "
              f"{'-' if caught is None else caught:>4} ({'-' if returned is None else returned})")
    print("reference rebuild profiles (genes only): batches from the spill to the signature; "
          "the first crawling batch's duration / its stall limit")
    for profile in ("incident1", "incident1-abrupt", "incident2"):
        caught_at, stall = incident(profile)
        print(f"{profile:<18} {'-' if caught_at is None else caught_at:>7} {stall:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
