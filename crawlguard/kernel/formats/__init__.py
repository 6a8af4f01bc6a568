"""The state files' formats: how what is inside a file is written and checked.

- ``schema``: what every state file's schema is built of (pydantic: ``StateModel``,
  ``WorkerJson``), and how every reader checks one (``read_file``, ``validate``,
  ``validate_line``);
- ``ladderfile``: ``shards/<shard>/ladder.json`` (the sidecar's ladder; version key ``schema``);
- ``pausefile``: ``sidecar.json`` (the sidecar's pause switch);
- ``auditlog``: ``audit.jsonl`` (the sidecar's decisions, one JSON object a line);
- ``batchlog``: ``shards/<shard>/batches.jsonl`` (one line per finished batch; key ``v``):
  one writer (``BatchWriter``), two readers (``read``, ``BatchTail``) of one line schema;
- ``vramlog``: ``vram.jsonl`` (the supervisor's VRAM samples; key ``v``);
- ``jsonlines``: reading any JSON-lines file line by line, damaged lines included.

Where each file lives is ``crawlguard.kernel.statedir``'s business. The schemas
of the files that belong to one module live there and are read through
``schema`` too (``kernel.workers``: worker.json, launch.json; ``kernel.oom``: the
OOM records; docs/architecture.md lists them all, with each one's version key).
Anything a schema refuses reads as ``CorruptStateError`` (a whole file) or as a
skipped, counted line. Where a format has a version key (ladder.json's ``schema``,
the ``v`` of batches.jsonl and vram.jsonl), a file or line without it was written
by the first release and reads as version 1, and a later version is refused (a
whole file) or skipped and counted (a line), never guessed at; the others
(sidecar.json, audit.jsonl, up.json) have none and ignore keys they do not know.
Nothing heavier than pydantic: ``crawlguard.sidecar.resume`` reads ladder.json
here in a build's own supervisor loop.
"""
