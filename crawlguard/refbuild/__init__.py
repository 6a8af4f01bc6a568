"""The reference rebuild: a small embedding build that behaves like the real one.

It exists so crawlguard can be shown and tested end to end without a GPU
(``crawlguard demo``, tests/e2e, bench/bench_rebuild.py). It is an ordinary
consumer of the build-side API, written the way docs/integration.md asks a
real build to be written:

- shards of input files of genes (``corpus``: a deterministic corpus per shard);
- batched "embedding" whose vectors are a function of the text alone
  (``vectors``), so a CPU run is byte-identical to a GPU run;
- one output file per input file, written atomically, and file-level resume:
  a file whose output exists is skipped (``store``);
- salvage on SIGTERM / SIGBREAK: the batch in flight is abandoned, every
  finished file is already on disk, the worker exits 128+signal so its
  supervisor resumes it (``worker``);
- a spill simulator that gives the worker the incident dynamics: simulated VRAM
  fills while a GPU worker runs, and once "spilled" its batches slow down like
  incident 1 or collapse like incident 2 (``profiles``, ``simdevice``), with a
  simulated driver that frees a process's memory only once it is dead
  (``simgpu``);
- the lossless verdict: every gene exactly once, byte-identical to a clean
  computation (``verify``).

Entry point: ``python -m crawlguard.refbuild {generate,work,verify,simgpu} ...``.
"""

from __future__ import annotations
