"""Subcommands whose capability is not built yet: they say so and exit non-zero, never fake output."""

from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace

from pointstn import __version__

EXIT_NOT_IMPLEMENTED = 3


def command(name: str, help_text: str) -> SimpleNamespace:
    """A stand-in subcommand module for `name` that reports it is not implemented yet."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(args: argparse.Namespace) -> int:
        print(f"pointstn {name}: not implemented yet in pointstn {__version__}", file=sys.stderr)
        return EXIT_NOT_IMPLEMENTED

    return SimpleNamespace(HELP=f"{help_text} (not implemented yet)", add_arguments=add_arguments, run=run)
