"""``python -m crawlguard``: the ``crawlguard`` command."""

import sys

from crawlguard.cli.main import main

sys.exit(main())
