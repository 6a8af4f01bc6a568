"""The state files' formats: how what is inside a file is written and checked.

- ``schema``: the schema of a JSON state file or line is a frozen dataclass, and
  ``schema.load`` / ``schema.read_file`` is how every reader checks one;
- ``ladderfile``: ``shards/<shard>/ladder.json`` (the sidecar's ladder; version key ``schema``);
- ``batchlog``: ``shards/<shard>/batches.jsonl`` (one line per finished batch; key ``v``):
  one writer (``BatchWriter``), two readers (``read``, ``BatchTail``) of one line schema;
- ``vramlog``: ``vram.jsonl`` (the supervisor's VRAM samples; key ``v``);
- ``jsonlines``: reading any JSON-lines file line by line, damaged lines included.

Where each file lives is ``crawlguard.kernel.statedir``'s business. The schemas
of the files that belong to one module live there and are read through
``schema`` too (``kernel.workers``: worker.json, launch.json; ``kernel.oom``: the
OOM records; docs/architecture.md lists them all). A line without a version field
was written by the first release and reads as version 1; a line of a higher
version than the reader knows is skipped and counted, never guessed at.
Standard library only, so the build's tracker and ``crawlguard.sidecar.resume``
(in a build's own supervisor loop) use them at no import cost.
"""
