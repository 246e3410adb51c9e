"""`pointstn verify DATASET`: recompute every object's content hash against the manifest."""

from __future__ import annotations

import argparse

HELP = "check a prepared dataset against its manifest's content hashes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset folder (holds manifest.json)")


def run(args: argparse.Namespace) -> int:
    from pointstn.data.format import read_manifest, verify_dataset

    problems = verify_dataset(args.dataset)
    for line in problems:
        print(f"problem: {line}")
    count = len(read_manifest(args.dataset)["objects"])
    print(f"{args.dataset}: {count} objects, {len(problems)} problems")
    return 1 if problems else 0
