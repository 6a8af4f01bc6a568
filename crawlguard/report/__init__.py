"""`crawlguard report`: a rebuild's evidence from its state dir.

``evidence`` reads the state dir, ``summary`` writes Markdown (both standard
library only); ``chart`` draws one PNG per shard (matplotlib, imported lazily).
"""
