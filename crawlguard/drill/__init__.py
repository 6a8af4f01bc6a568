"""``crawlguard drill``: a fire drill on the user's own running rig and build.

- ``run``: the drill (find the worker and the rig, slow the worker, watch the ladder);
- ``slower``: the slowdown, a duty cycle of stops run by a child process;
- ``timeline``: what happened, read from the shard's batches, ladder and registration.

The state it shares with the exporter and the sidecar is ``crawlguard.kernel.drills``.
"""
