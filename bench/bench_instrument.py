"""Cost of ``tracker.instrument(model)`` per batch, on a real (small) model.

    .venv/bin/python bench/bench_instrument.py [--batches 300] [--batch-size 32]

Two figures, both per batch:

- the hooks' own time: crawlguard's pre- and post-hook called as torch calls
  them, with the batch's attention mask (in-flight gauges, the length-weighted
  token count, the finished batch's mmap writes and its batches.jsonl line);
- the forward of a 2-layer XLM-R (hidden 128, random weights, built here: no
  model hub) on a batch of ``--batch-size`` texts of 64 tokens, with and
  without the hooks, interleaved, medians.

The target (issue 11): at most 1 % of a batch. On a GPU the hook adds one
``torch.cuda.synchronize`` (not present on this CPU-only bench). Needs the
``libs`` extra. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tokens", type=int, default=64)
    args = p.parse_args()
    try:
        import torch
        from transformers import XLMRobertaModel
    except ImportError:
        print("needs the libs extra: pip install torch==2.13.0 && pip install -e '.[libs]'")
        return 2
    from crawlguard import CrawlTracker
    from crawlguard.exporter.instrument import ATTR, uninstrument
    from tests.libs import models

    torch.manual_seed(0)
    model = XLMRobertaModel(models.config(len(models.SPECIAL) + len(models.WORDS), 128)).eval()
    ids = torch.randint(len(models.SPECIAL), 400, (args.batch_size, args.tokens))
    mask = torch.ones_like(ids)
    mask[:, args.tokens * 3 // 4:] = 0  # a quarter of padding, as in a real batch
    with tempfile.TemporaryDirectory() as tmp:
        tracker = CrawlTracker("bench", "backfill", "cpu", state_dir=Path(tmp), total=10**9)
        tracker.instrument(model)
        hooks = model.__dict__[ATTR]
        kwargs = {"input_ids": ids, "attention_mask": mask}
        hook_ns = []
        for _ in range(args.batches * 10):
            t0 = time.perf_counter_ns()
            hooks.pre(model, (), kwargs)
            hooks.post(model, (), kwargs, ids)
            hook_ns.append(time.perf_counter_ns() - t0)
        bare_ns, hooked_ns = [], []
        with torch.inference_mode():
            for _ in range(5):
                model(**kwargs)
            # Blocks of ten, alternating, so drift on a shared machine hits both alike.
            for i in range(args.batches // 10):
                for hooked in ((False, True) if i % 2 else (True, False)):
                    if hooked:
                        tracker.instrument(model)
                    else:
                        uninstrument(model)
                    for _ in range(10):
                        t0 = time.perf_counter_ns()
                        model(**kwargs)
                        (hooked_ns if hooked else bare_ns).append(time.perf_counter_ns() - t0)
        tracker.close()
    hook_us = statistics.median(hook_ns) / 1000
    bare_ms = statistics.median(bare_ns) / 1e6
    hooked_ms = statistics.median(hooked_ns) / 1e6
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch "
          f"{args.batch_size} x {args.tokens} tokens, 2-layer XLM-R hidden 128")
    print(f"hooks' own time per batch:  median {hook_us:.1f} us, p90 "
          f"{statistics.quantiles(hook_ns, n=10)[-1] / 1000:.1f} us")
    print(f"forward without hooks:      median {bare_ms:.3f} ms")
    print(f"forward with hooks:         median {hooked_ms:.3f} ms")
    print(f"overhead: {100 * hook_us / 1000 / bare_ms:.2f} % of this batch (hooks' own time); "
          f"{100 * (hooked_ms - bare_ms) / bare_ms:+.2f} % measured end to end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
