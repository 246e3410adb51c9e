"""`pointstn diagnose CONFIG --ckpt CKPT`: where f@1% is lost inside the sparse decoder, level by level."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from pointstn.cli.test_cmd import add_evaluation_arguments
from pointstn.errors import PointstnError

HELP = "f@1% with the decoder's own voxels vs the truth's at each level (a diagnosis; reads the ground truth)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_evaluation_arguments(parser, ckpt_help="model checkpoint with the sparse decoder (e.g. runs/demo/best.pt)")
    parser.add_argument("--max-images", type=int, default=96, metavar="N",
                        help="at most N images of the split, at even strides (default 96; 0 = all)")
    parser.add_argument("--by-family", action="store_true",
                        help="one breakdown per object family, each on at most --max-images of its images")
    parser.add_argument("--out", default=None, help="also write the report as JSON (and Markdown beside it)")


def run(args: argparse.Namespace) -> int:
    from pointstn.cli.test_cmd import evaluation_dataset
    from pointstn.config import ExperimentConfig, load_config
    from pointstn.engine.checkpoint import model_from_checkpoint
    from pointstn.engine.diagnose import family_breakdown, family_markdown, level_breakdown, markdown
    from pointstn.io.atomic import atomic_write_text

    if args.max_images < 0:
        raise PointstnError(f"--max-images must be >= 0; got {args.max_images}")
    config = load_config(args.config, ExperimentConfig, args.overrides)
    out = Path(args.out) if args.out else None
    if out is not None:
        try:  # before minutes of evaluation, not after
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PointstnError(f"cannot create the output folder {out.parent}: {exc.strerror or exc}") from None
    model, checkpoint = model_from_checkpoint(args.ckpt)
    dataset = evaluation_dataset(config, checkpoint.config, data=args.data, split=args.split)
    breakdown, render = (family_breakdown, family_markdown) if args.by_family else (level_breakdown, markdown)
    report = breakdown(model, dataset, target_frame=checkpoint.config.model.decoder.target_frame,
                       num_pred_points=config.eval.num_pred_points, resample_how=config.eval.resample,
                       max_images=args.max_images or None)
    text = render(report, command=_command(args))
    print(text, end="")
    if out is not None:
        atomic_write_text(out, json.dumps(report, indent=1) + "\n")
        atomic_write_text(out.with_suffix(".md"), text)
        print(f"report: {out} (+ {out.with_suffix('.md').name})")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this report."""
    words = ["pointstn", "diagnose", args.config, *args.overrides, "--ckpt", args.ckpt]
    for flag, value in (("--data", args.data), ("--split", args.split)):
        if value:
            words += [flag, value]
    words += ["--max-images", str(args.max_images)] + (["--by-family"] if args.by_family else [])
    return " ".join(shlex.quote(w) for w in words)
