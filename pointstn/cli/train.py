"""`pointstn train CONFIG [key=value ...]`: train from a YAML config (also under torchrun)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pointstn.errors import PointstnError

HELP = "train a model from a YAML config (multi-process: torchrun --nproc_per_node N tools/train.py ...)"
LAST = "last.pt"
CHECKPOINTS = (LAST, "best.pt")  # a folder holding either already holds a run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML (e.g. configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=5e-4")
    parser.add_argument("--out", help="run folder (default: output_dir of the config, else runs/<name>)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", nargs="?", const="", default=None, metavar="CKPT",
                       help=f"continue from CKPT (default: <run folder>/{LAST})")
    start.add_argument("--init", metavar="CKPT",
                       help="start a new run from CKPT's model weights (fine-tuning, e.g. a trained model on your "
                            "own objects): fresh optimizer, schedule and step count; the model must fit the config")
    parser.add_argument("--time-limit", type=float, default=None, metavar="MIN",
                        help="save and stop cleanly after this many minutes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_dir_of(config, out: str | None) -> Path:
    return Path(out or config.output_dir or Path("runs") / config.name)


def run(args: argparse.Namespace) -> int:
    from pointstn.config import ExperimentConfig, load_config
    from pointstn.engine.trainer import train

    config = load_config(args.config, ExperimentConfig, args.overrides)
    run_dir = run_dir_of(config, args.out)
    resume = None
    if args.resume is not None:
        resume = Path(args.resume) if args.resume else run_dir / LAST
        if not resume.is_file():
            raise PointstnError(f"nothing to resume: {resume} does not exist")
    elif any((run_dir / name).exists() for name in CHECKPOINTS):
        held = ", ".join(name for name in CHECKPOINTS if (run_dir / name).exists())
        raise PointstnError(f"run folder {run_dir} already holds a run ({held}); continue it with --resume "
                            "or pick another --out")
    if args.init is not None and not Path(args.init).is_file():
        raise PointstnError(f"nothing to start from: {args.init} does not exist")
    if args.time_limit is not None and args.time_limit <= 0:
        raise PointstnError(f"--time-limit must be a positive number of minutes, got {args.time_limit}")
    result = train(config, run_dir=run_dir, resume=resume, init=args.init, time_limit_minutes=args.time_limit,
                   progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 validates, so only it knows the best
        best = "n/a" if result.best_value is None else f"{result.best_value:.4f}"
        print(f"{result.stopped} at step {result.step}; best {config.train.best_metric} = {best}; run folder {run_dir}")
    return 0
