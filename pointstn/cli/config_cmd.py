"""`pointstn config CONFIG [key=value ...]`: print (or write) the fully resolved config."""

from __future__ import annotations

import argparse

from pointstn.config import ExperimentConfig, dump_config, load_config

HELP = "print the fully resolved config (after _base_ and overrides)"


def _schema(kind: str) -> type:
    if kind == "dataset":
        from pointstn.data.config import DatasetConfig

        return DatasetConfig
    return ExperimentConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides, e.g. train.lr=0.0005")
    parser.add_argument("--out", help="write the resolved YAML here instead of printing it")
    parser.add_argument(
        "--kind", choices=("experiment", "dataset"), default="experiment",
        help="experiment config (configs/*.yaml) or dataset-generation config (configs/data/*.yaml)",
    )


def run(args: argparse.Namespace) -> int:
    text = dump_config(load_config(args.config, _schema(args.kind), args.overrides))
    if args.out:
        from pointstn.io.atomic import atomic_write_text

        atomic_write_text(args.out, text)
    else:
        print(text, end="")
    return 0
