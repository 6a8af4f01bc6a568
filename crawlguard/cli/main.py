"""The ``crawlguard`` command: subcommands in ``crawlguard/cli``, imported only when chosen.

Every subcommand reads the HELIX_BFM_* knobs from the environment (through
``crawlguard.kernel.settings``); flags override them. Errors crawlguard raises on
purpose end as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from crawlguard.cli import COMMANDS, load
from crawlguard.kernel import logs, winconsole
from crawlguard.kernel.errors import CrawlguardError
from crawlguard.kernel.settings import ACTIONS

EPILOG = f"""\
knobs (environment): HELIX_BFM_CRAWL_FACTOR (5), HELIX_BFM_CRAWL_WINDOW (8),
HELIX_BFM_CRAWL_ACTION ({"|".join(ACTIONS)}), HELIX_BFM_VRAM_FULL_RATIO (0.95),
HELIX_BFM_STATE_DIR (.crawlguard), HELIX_BFM_SIDECAR_TOKEN, HELIX_BFM_VRAM_SOURCE
(nvml|file:PATH) and more: see docs/architecture.md#knobs.
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with every subcommand listed but only ``command``'s module imported:
    the others are placeholders that carry their help line."""
    parser = argparse.ArgumentParser(
        prog="crawlguard",
        description="Watch a long GPU embedding rebuild, recognise the VRAM-spill crawl and "
                    "fix it: restart the worker, then demote the shard to CPU.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = COMMANDS[command].module if command in COMMANDS else None
    for name, entry in COMMANDS.items():
        if name in sub.choices:
            continue  # added with the rest of its module
        if entry.module == chosen:
            load(name)(sub)
        else:
            sub.add_parser(name, help=entry.help, add_help=False)
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option (the
    top-level options take no values)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(chosen_command(argv))
    args = parser.parse_args(argv)
    logs.console(args.verbose)
    try:
        # A QuickEdit selection would stop every thread that writes to the console.
        with winconsole.quick_edit_off():
            return int(args.func(args))
    except CrawlguardError as exc:
        print(f"crawlguard {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
