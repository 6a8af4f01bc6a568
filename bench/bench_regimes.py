"""The rate signature on random streams of batch shapes, with pauses: false signatures
and detection, beyond the corpus shapes of bench_shapes.py.

    .venv/bin/python bench/bench_regimes.py [--runs N] [--seed S] [--pause P]

Each run draws a forward's costs (``a + b x tokens + c x quad`` seconds: a fixed cost
of 0.1-100 ms, 0.1-100 us per padded token, attention 0 or 1e-10-1e-7 s per unit)
and 1-4 kinds of batch (rows up to 64, padded length up to 2,048), then 300
batches: each of the current kind with rows and length drawn below its maximum,
switching to a random kind with probability 5 % per batch; every batch takes its
cost times a noise of 1-1.3, and a fraction ``--pause`` of them (default 3 %)
2-6 times more (a pause: another process on the device, a checkpoint). The
stream is judged by ``rate.RateState`` with the default knobs twice: as it is,
and 10x slower from a random batch between the 30th and the 250th on.

Printed: runs whose healthy stream held the crawl signature (a false crawl), and
for the slowed streams how many were caught, how many within 14 batches of the
onset, and how many never; then the lowest EMA ratio of each healthy run (the
threshold is 0.2), over the runs: the least, the 1st percentile and the median.
Pure arithmetic, no torch; prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys

from crawlguard.exporter.rate import RateState
from crawlguard.exporter.workmodel import Shape, padded_shape
from crawlguard.kernel.settings import Detection

BATCHES = 300
SLOWDOWN = 10.0


def stream(rng: random.Random, pause: float) -> tuple[list[tuple[Shape, float]], int]:
    """(shape, seconds) of each batch of one run, and the onset of its slowdown."""
    a, b = rng.uniform(1e-4, 0.1), 10 ** rng.uniform(-7, -4)
    c = rng.choice([0.0, 10 ** rng.uniform(-10, -7)])
    kinds = [(rng.randint(1, 64), rng.randint(1, 2048)) for _ in range(rng.randint(1, 4))]
    kind, out = kinds[0], []
    for _ in range(BATCHES):
        if rng.random() < 0.05:
            kind = rng.choice(kinds)
        shape = padded_shape(max(1, int(kind[0] * rng.uniform(0.5, 1.0))),
                             max(1, int(kind[1] * rng.uniform(0.7, 1.0))))
        noise = rng.uniform(1.0, 1.3)
        if rng.random() < pause:
            noise *= rng.uniform(2.0, 6.0)
        out.append((shape, (a + b * shape.tokens + c * shape.quad) * noise))
    return out, rng.randint(30, 250)


def judge(batches: list[tuple[Shape, float]], slow_from: int | None,
          ) -> tuple[int | None, float]:
    """(the first batch that holds the crawl signature, the lowest EMA ratio before it)."""
    state, lowest = RateState(Detection()), math.inf
    for i, (shape, seconds) in enumerate(batches):
        slow = SLOWDOWN if slow_from is not None and i >= slow_from else 1.0
        state.observe(shape.rows, seconds * slow, shape)
        if state.crawling:
            return i, lowest
        if state.model is not None and state.ratio is not None:
            lowest = min(lowest, state.ratio)
    return None, lowest


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pause", type=float, default=0.03)
    args = p.parse_args()
    rng = random.Random(args.seed)
    false = caught = quick = never = 0
    lows = []
    for _ in range(args.runs):
        batches, onset = stream(rng, args.pause)
        at, lowest = judge(batches, None)
        false += at is not None
        lows.append(lowest)
        at = judge(batches, onset)[0]
        if at is None:
            never += 1
        elif at >= onset:
            caught += 1
            quick += at - onset + 1 <= 14
    print(f"seed {args.seed}, {args.runs} runs of {BATCHES} batches, {args.pause:.0%} paused: "
          f"false crawls {false}; {SLOWDOWN:.0f}x from a random batch: caught {caught} "
          f"({quick} within 14 batches), never {never}; healthy runs' lowest EMA ratio: "
          f"min {min(lows):.2f}, 1st percentile {sorted(lows)[len(lows) // 100]:.2f}, "
          f"median {statistics.median(lows):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
