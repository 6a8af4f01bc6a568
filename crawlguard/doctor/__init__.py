"""``crawlguard doctor``: a pre-flight of the rig (``checks``), through small edges (``probes``)."""
