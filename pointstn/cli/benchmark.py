"""`pointstn benchmark`: run benchmark suites side by side and record them in docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import sys

from pointstn.errors import PointstnError

HELP = "run benchmark suites (contenders side by side, each case in a fresh process)"
# Every suite the project plans; those missing from pointstn.bench.runner.SUITES are not built yet.
PLANNED_SUITES = ("chamfer", "decoder", "model", "data", "predict", "scaling", "memory")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="all", help=f"all or a comma-separated list of: {', '.join(PLANNED_SUITES)}")
    parser.add_argument("--out", default=None, help="Markdown file to update (its suite sections only)")
    parser.add_argument("--json", default=None, help="write the raw results as JSON here")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per case (default 2)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the suites run, numbers mean nothing")
    parser.add_argument("--checkpoint", default=None, metavar="CKPT",
                        help="predict suite: measure this trained checkpoint (default: a random-weight default model)")


def run(args: argparse.Namespace) -> int:
    requested = PLANNED_SUITES if args.suite == "all" else tuple(s.strip() for s in args.suite.split(",") if s.strip())
    unknown = [s for s in requested if s not in PLANNED_SUITES]
    if unknown:
        raise PointstnError(f"unknown benchmark suite '{unknown[0]}'; valid: all, {', '.join(PLANNED_SUITES)}")
    if args.threads < 1:
        raise PointstnError(f"--threads must be >= 1, got {args.threads}")
    from pointstn.bench.runner import SUITES
    from pointstn.bench.runner import run as run_suites

    available = [s for s in requested if s in SUITES]
    pending = [s for s in requested if s not in SUITES]
    if pending:
        print(f"pointstn benchmark: not implemented yet: {', '.join(pending)}", file=sys.stderr)
    if available:
        if args.checkpoint is not None:
            from pointstn.engine.checkpoint import load_checkpoint

            load_checkpoint(args.checkpoint)  # one clear line now, not a traceback in a worker process
        run_suites(available, out_md=args.out, out_json=args.json, quick=args.quick, threads=args.threads,
                   checkpoint=args.checkpoint)
    # asking only for suites that do not exist yet is not a success
    return 0 if available else 3
