"""A real-library build for the end-to-end tests: sentence-transformers under crawlguard.

    python -m tests.libs.st_worker --model DIR --data DIR --shard NAME
        [--chunks N] [--oom-after N]

Chunk ``i`` of the shard's texts is encoded by one ``encode`` call and written
atomically to ``<data>/out/<shard>/<i>.npy``; a relaunched worker skips the
chunks already written (file-level resume), so a worker killed at any moment
loses at most the chunk in flight. The device is the resume variable
``BGEM3_DEVICE`` (default ``cuda:0``); there is no GPU in the tests, so the
model always computes on the CPU and the device is what the tracker reports,
what the slowdown applies to, and what the CPU rung changes.

``--oom-after N``: on a GPU device, the forward after N batches raises
torch.OutOfMemoryError and the worker dies of it, as with the driver's
"Prefer No Sysmem Fallback" once VRAM is full.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

from crawlguard import CrawlTracker
from tests.libs import models

CHUNK = 4


def shard_texts(shard: str, chunks: int) -> list[list[str]]:
    texts = models.texts(chunks * CHUNK, 3, 40, seed=sum(map(ord, shard)))
    return [texts[i * CHUNK:(i + 1) * CHUNK] for i in range(chunks)]


def load_model(directory: str | Path) -> SentenceTransformer:
    torch.set_num_threads(1)  # the same arithmetic in every process
    word = Transformer(str(directory), max_seq_length=128)
    return SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension())],
                               device="cpu")


def encode(model: SentenceTransformer, chunk: list[str]) -> Any:
    return model.encode(chunk, batch_size=CHUNK, convert_to_numpy=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--shard", required=True)
    p.add_argument("--chunks", type=int, default=60)
    p.add_argument("--oom-after", type=int, default=0)
    args = p.parse_args()
    stop = threading.Event()
    signum = [0]

    def graceful(sig: int, frame: Any) -> None:
        signum[0] = sig
        stop.set()

    signal.signal(signal.SIGTERM, graceful)
    device = os.environ.get("BGEM3_DEVICE") or "cuda:0"
    out = args.data / "out" / args.shard
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob("*.tmp"):
        leftover.unlink()
    chunks = shard_texts(args.shard, args.chunks)
    todo = [i for i in range(len(chunks)) if not (out / f"{i}.npy").exists()]
    tracker = CrawlTracker(args.shard, "backfill", device, total=len(todo) * CHUNK)
    model = load_model(args.model)
    tracker.instrument(model)
    if args.oom_after and device != "cpu":
        batches = [0]

        def spill(module: Any, inputs: Any) -> None:
            batches[0] += 1
            if batches[0] > args.oom_after:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        # Inside the observed forward, as a real OOM is: a hook of its pooling module.
        model[1].register_forward_pre_hook(spill)
    for i in todo:
        if stop.is_set():
            print(f"stopped by signal {signum[0]}", flush=True)
            return 128 + signum[0]
        vectors = encode(model, chunks[i])
        tmp = out / f"{i}.npy.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, vectors)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out / f"{i}.npy")
        with open(args.data / f"{args.shard}.written", "a", encoding="utf-8") as log:
            log.write(f"{i}\n")
    print(f"done on {device}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
