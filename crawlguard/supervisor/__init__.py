"""`crawlguard run`: the supervisor loop that relaunches a shard's worker.

``loop`` (the loop itself), ``childproc`` (process groups, graceful stop),
``launchenv`` (the resume environment a worker starts with), ``gpuwait`` (the
bounded wait for a dead worker's VRAM), ``vramlog`` (VRAM samples for the
report). Progress (genes per shard) is read from ``batches.jsonl`` with
``crawlguard.kernel.formats.batchlog.BatchTail``.
"""
