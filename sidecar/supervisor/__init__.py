"""`crawlguard run`: the supervisor loop that relaunches a shard's worker.

``loop`` (the loop itself), ``childproc`` (process groups, graceful stop),
``launchenv`` (the resume environment a worker starts with), ``gpuwait`` (the
bounded wait for a dead worker's VRAM), ``progress`` (genes per shard from
``batches.jsonl``), ``vramlog`` (VRAM samples for the report).
"""
