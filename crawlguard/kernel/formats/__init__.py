"""One reader and one writer per state file format, each with a version.

- ``ladderfile``: ``shards/<shard>/ladder.json`` (the sidecar's ladder; version key ``schema``);
- ``batchlog``: ``shards/<shard>/batches.jsonl`` (one line per finished batch; key ``v``);
- ``vramlog``: ``vram.jsonl`` (the supervisor's VRAM samples; key ``v``);
- ``jsonlines``: reading any JSON-lines file line by line, damaged lines included.

Where each file lives is ``crawlguard.kernel.statedir``'s business; what is inside it
is the business of its module here. A file or line without a version field was
written by the first release and reads as version 1; a higher version than the
reader knows is refused (a whole file) or skipped and counted (a line), never
guessed at. Standard library only, like the rest of the kernel's readers, so
``crawlguard.sidecar.resume`` can use them in a build's own supervisor loop.
"""
