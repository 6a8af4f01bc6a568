"""The kernel (``crawlguard.kernel``): what every room of crawlguard stands on.

``errors`` (the one exception tree), ``settings`` (every knob, parsed in one
place), ``names`` (the one shard/stage name type), ``devices`` (device strings
and GPU labels), ``statedir`` (the state directory's layout and atomic I/O),
``workers`` (worker identity: pid + creation time) and ``formats`` (the one
reader and writer of each state file).
``logs`` names every logger ``crawlguard.<module path>``.

The kernel imports nothing else of crawlguard, and this ``__init__`` imports
nothing at all, so ``from crawlguard.kernel.errors import ...`` costs one small
module.
"""
