"""`crawlguard report`: a rebuild's evidence from its state dir.

``summary`` reads the state dir and writes Markdown (standard library only);
``chart`` draws one PNG per shard (matplotlib, imported lazily).
"""
