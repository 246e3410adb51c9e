"""`pointstn config CONFIG [key=value ...]`: print (or write) the fully resolved config."""

from __future__ import annotations

import argparse

from pointstn.config import ExperimentConfig, dump_config, load_config

HELP = "print the fully resolved config (after _base_ and overrides)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides, e.g. train.lr=0.0005")
    parser.add_argument("--out", help="write the resolved YAML here instead of printing it")


def run(args: argparse.Namespace) -> int:
    text = dump_config(load_config(args.config, ExperimentConfig, args.overrides))
    if args.out:
        from pointstn.io.atomic import atomic_write_text

        atomic_write_text(args.out, text)
    else:
        print(text, end="")
    return 0
