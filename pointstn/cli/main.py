"""The `pointstn` command: one subcommand per module, user errors as one line and exit code 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from pointstn import __version__
from pointstn.allocator import tune_allocator
from pointstn.cli import benchmark, config_cmd, demo, diagnose, export, predict, prepare_data, test_cmd, train, verify
from pointstn.errors import PointstnError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# name -> module with `HELP`, `add_arguments(parser)` and `run(args) -> int`
COMMANDS: dict[str, ModuleType] = {
    "prepare-data": prepare_data,
    "verify": verify,
    "train": train,
    "test": test_cmd,
    "diagnose": diagnose,
    "predict": predict,
    "export": export,
    "benchmark": benchmark,
    "config": config_cmd,
    "demo": demo,
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser = argparse.ArgumentParser(
        prog="pointstn",
        description="Single-image 3D point-cloud reconstruction (STN + sparse 3D U-Net).",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"pointstn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP, parents=[common]))
    return parser


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pointstn` and of the scripts in tools/. Returns the process exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes a command's key=value overrides only right after its positional arguments; accept them
    # after options too (`pointstn train CONFIG --out DIR train.lr=1e-4`), and nothing else unknown
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        tune_allocator()  # before the command allocates anything (pointstn/allocator.py)
        return int(COMMANDS[args.command].run(args) or 0)
    except PointstnError as exc:
        if args.debug:
            raise
        print(f"pointstn {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"pointstn {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
