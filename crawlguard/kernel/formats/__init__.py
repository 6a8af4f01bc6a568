"""One reader and one writer per state file format, each with a version.

- ``ladderfile``: ``shards/<shard>/ladder.json`` (the sidecar's ladder; version key ``schema``);
- ``pausefile``: ``sidecar.json`` (the sidecar's pause switch);
- ``auditlog``: ``audit.jsonl`` (the sidecar's decisions, one JSON object a line);
- ``batchlog``: ``shards/<shard>/batches.jsonl`` (one line per finished batch; key ``v``);
- ``vramlog``: ``vram.jsonl`` (the supervisor's VRAM samples; key ``v``);
- ``jsonlines``: reading any JSON-lines file line by line, damaged lines included;
- ``schema``: what the sidecar's files' schemas are built of (pydantic, strict).

Where each file lives is ``crawlguard.kernel.statedir``'s business; what is inside it
is the business of its module here. The files the sidecar owns have one pydantic
schema each, which their one reader validates: anything else reads as
``CorruptStateError`` (a whole file) or as a skipped, counted line. A file or line
without a version field was written by the first release and reads as version 1; a
higher version than the reader knows is refused (a whole file) or skipped and counted
(a line), never guessed at. Nothing heavier than pydantic: ``crawlguard.sidecar.resume``
reads ladder.json here in a build's own supervisor loop.
"""
