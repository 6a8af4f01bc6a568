"""A real-library build over a corpus of mixed shapes, for the end-to-end shape tests.

    python -m tests.libs.shape_worker --model DIR --data DIR --shard NAME
        --corpus chat_wiki|tiny_then_long

One sentence-transformers ``encode`` per input file (batch size 32), written
atomically to ``<data>/out/<shard>/<i>.npy``; a relaunched worker skips the
files already written. The corpora are the shapes that made the genes-based
stall rule demote healthy shards (issue 17):

- ``chat_wiki``: files of 64 chat lines (~14 tokens) and of 16 wiki pages
  (~700 tokens), alternating;
- ``tiny_then_long``: files of 64 tiny items, then files of 16 long documents.

The model computes on the CPU and is tiny, so each batch also spends a
simulated device time inside the instrumented forward: 20 ms, plus 20 us per
padded token, plus 0.2 us per padded token and position (attention). A page
batch then takes about 70 times as long as a chat batch of twice its genes: far
beyond a stall limit counted in genes, at exactly the pace of its work.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

from crawlguard import CrawlTracker
from tests.libs import models

BATCH = 32
FIXED_S, TOKEN_S, ATTENTION_S = 0.02, 2e-5, 2e-7


def device_seconds(rows: int, longest: int) -> float:
    """The simulated device time of a padded batch (see the module doc)."""
    padded = rows * longest
    return FIXED_S + TOKEN_S * padded + ATTENTION_S * padded * longest


def load_model(directory: str | Path) -> SentenceTransformer:
    torch.set_num_threads(1)
    word = Transformer(str(directory), max_seq_length=1024)
    return SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension())],
                               device="cpu")


def _texts(rng: random.Random, count: int, lo: int, hi: int) -> list[str]:
    return [" ".join(rng.choice(models.WORDS) for _ in range(rng.randint(lo, hi)))
            for _ in range(count)]


def corpus(name: str, shard: str) -> list[list[str]]:
    """The shard's input files: lists of texts (one word is one token)."""
    rng = random.Random(f"{name}:{shard}")
    chat = lambda: _texts(rng, 64, 8, 16)  # noqa: E731
    wiki = lambda: _texts(rng, 16, 600, 800)  # noqa: E731
    if name == "chat_wiki":
        return [chat() if i % 2 == 0 else wiki() for i in range(10)]
    if name == "tiny_then_long":
        return [_texts(rng, 64, 1, 10) for _ in range(4)] + [wiki() for _ in range(4)]
    raise SystemExit(f"unknown corpus {name!r}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--shard", required=True)
    p.add_argument("--corpus", required=True)
    args = p.parse_args()
    device = os.environ.get("BGEM3_DEVICE") or "cuda:0"
    out = args.data / "out" / args.shard
    out.mkdir(parents=True, exist_ok=True)
    files = corpus(args.corpus, args.shard)
    todo = [i for i in range(len(files)) if not (out / f"{i}.npy").exists()]
    tracker = CrawlTracker(args.shard, "backfill", device,
                           total=sum(len(files[i]) for i in todo))
    model = load_model(args.model)
    tracker.instrument(model)

    def device_time(module: Any, args: Any, output: Any) -> None:
        mask = args[0]["attention_mask"]
        time.sleep(device_seconds(int(mask.shape[0]), int(mask.shape[1])))

    # Inside the observed forward: a hook of its pooling module, which it calls.
    model[1].register_forward_hook(device_time)
    with torch.inference_mode():
        for i in todo:
            vectors = model.encode(files[i], batch_size=BATCH, convert_to_numpy=True)
            tmp = out / f"{i}.npy.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, vectors)
            os.replace(tmp, out / f"{i}.npy")
    print(f"done on {device}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
