"""`pointstn test CONFIG --ckpt CKPT`: every metric, per family and viewpoint bin, with the baselines."""

from __future__ import annotations

import argparse
from pathlib import Path

from pointstn.errors import PointstnError

HELP = "evaluate a checkpoint and the baselines on a split (JSON, Markdown table, figure)"


def add_evaluation_arguments(parser: argparse.ArgumentParser, *, ckpt_help: str) -> None:
    """CONFIG, overrides, --ckpt, --data and --split: what every command that evaluates a checkpoint takes
    (`evaluation_dataset` reads --data and --split)."""
    parser.add_argument("config", help="experiment YAML: data and eval settings (the model comes from --ckpt)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. eval.resample=random")
    parser.add_argument("--ckpt", required=True, help=ckpt_help)
    parser.add_argument("--data", help="prepared dataset to evaluate on (default: data.root of the config)")
    parser.add_argument("--split", help="split to evaluate (default: data.test_split; all objects if the "
                                         "dataset has no such split)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_evaluation_arguments(parser, ckpt_help="model checkpoint (e.g. runs/demo/best.pt)")
    parser.add_argument("--baselines", default="retrieval,oracle_nn",
                        help="comma-separated subset of retrieval,oracle_nn,psgn ('' for none)")
    parser.add_argument("--psgn-ckpt", help="checkpoint of the psgn baseline (decoder none), needed for psgn")
    parser.add_argument("--out", default=None, help="metrics JSON (default <run folder of CKPT>/metrics.json)")
    parser.add_argument("--no-volumes", action="store_true", help="skip vol_rel_err (the slowest metric)")
    parser.add_argument("--prune-threshold", type=float, default=None, metavar="P",
                        help="occupancy probability the decoder keeps voxels above at inference "
                             "(default: the checkpoint's model.decoder.prune_threshold)")
    parser.add_argument("--voxel-floor", type=float, default=None, metavar="F",
                        help="every decoder level keeps at least ceil(F * r^2) voxels per sample "
                             "(default: the checkpoint's model.decoder.voxel_floor)")


def run(args: argparse.Namespace) -> int:
    from pointstn.config import ExperimentConfig, load_config
    from pointstn.engine.calibrate import same_network
    from pointstn.engine.checkpoint import model_from_checkpoint
    from pointstn.engine.test_run import BASELINES, build_methods, run_test

    config = load_config(args.config, ExperimentConfig, args.overrides)
    baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise PointstnError(f"unknown baseline '{unknown[0]}'; valid: {', '.join(BASELINES)}")
    if "psgn" in baselines and not args.psgn_ckpt:
        raise PointstnError("the psgn baseline needs --psgn-ckpt (a model trained with model.decoder.kind=none)")
    out = Path(args.out) if args.out else Path(args.ckpt).parent / "metrics.json"
    try:  # before minutes of evaluation, not after
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PointstnError(f"cannot create the output folder {out.parent}: {exc.strerror or exc}") from None
    model, checkpoint = model_from_checkpoint(args.ckpt)
    if args.prune_threshold is not None or args.voxel_floor is not None:
        if model.decoder is None:
            raise PointstnError(f"{args.ckpt} has no decoder (model.decoder.kind=none); "
                                "--prune-threshold and --voxel-floor do not apply")
        try:
            model.decoder.set_inference_pruning(
                prune_threshold=model.decoder.prune_threshold if args.prune_threshold is None else args.prune_threshold,
                voxel_floor=model.decoder.voxel_floor if args.voxel_floor is None else args.voxel_floor)
        except ValueError as exc:
            raise PointstnError(f"--prune-threshold / --voxel-floor: {exc}") from None
    if not same_network(checkpoint.config.model, config.model):
        print(f"note: the model is rebuilt from {args.ckpt}'s own config; the model section of {args.config} differs")
    if model.decoder is not None:  # calibration stores its choice in best.pt: say which pair is evaluated
        source = "--prune-threshold/--voxel-floor" if (args.prune_threshold, args.voxel_floor) != (None, None) \
            else f"stored in {args.ckpt}"
        print(f"inference pruning: voxel_floor {model.decoder.voxel_floor:g}, prune_threshold "
              f"{model.decoder.prune_threshold:g} ({source})")
    psgn = model_from_checkpoint(args.psgn_ckpt)[0] if "psgn" in baselines else None
    dataset = evaluation_dataset(config, checkpoint.config, data=args.data, split=args.split)
    methods = build_methods(checkpoint.config, model, baselines=baselines, psgn_model=psgn,
                            train_root=Path(checkpoint.config.data.root))
    report = run_test(config, methods, dataset, out_json=out, volumes=not args.no_volumes)
    for name, frames in report["methods"].items():
        shape = frames.get("shape", {})
        print(f"{name:10s} shape frame: f@1% {shape.get('f@1%', float('nan')):.4f}  cd_l2 {shape.get('cd_l2', float('nan')):.3f}")
    print(f"metrics: {out} (+ {out.with_suffix('.md').name}, {out.with_suffix('.png').name})")
    return 0


def evaluation_dataset(config, model_config, *, data: str | None, split: str | None):
    """The dataset `--data` / `--split` select: the config's data.root and data.test_split by default (all
    objects, with a note, when the dataset has no such split), at the model's image size, with the
    evaluation's ground-truth point count."""
    from pointstn.data.dataset import PreparedDataset
    from pointstn.data.format import read_manifest
    from pointstn.engine.evaluate import evaluation_points

    data_root = Path(data or config.data.root)
    chosen = split or config.data.test_split
    if not read_manifest(data_root)["splits"].get(chosen):
        if split:
            raise PointstnError(f"dataset {data_root} has no objects in split '{chosen}'")
        print(f"note: {data_root} has no '{chosen}' split; evaluating all of its objects")
        chosen = None
    return PreparedDataset(data_root, split=chosen, image_size=model_config.data.image_size,
                           num_points=evaluation_points(config, data_root))
