"""One subcommand run on its own (`python -m lstmc.train`, `python -m lstmc.tune`,
`python -m lstmc.anomaly`): the same parser and the same one-line errors as `lstmc COMMAND`."""

from __future__ import annotations

import argparse
import sys


def run_alone(command: str, add_parser, argv=None) -> int:
    """Parse `argv` (default: sys.argv[1:]; the word `command` may be left out) with the subparser
    `add_parser` adds and run it. Exit status 2, with one line on stderr, when an option value or a
    file is wrong (ValueError, FileNotFoundError and their subclasses)."""
    p = argparse.ArgumentParser(prog="lstmc")
    sub = p.add_subparsers(dest="command", required=True)
    add_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv if argv[:1] == [command] else [command, *argv])
    try:
        return args.fn(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"lstmc: error: {e}", file=sys.stderr)
        return 2
