"""`pointstn predict --ckpt CKPT INPUT... --out DIR`: point clouds, pose and volumes for images.

Inputs are image files, folders (their images, not recursive) or glob patterns. Per input, files named
after it go to --out (formats: pointstn.inference.outputs). A bad input is reported on one line and
skipped; the others are still processed, and the exit code is then 1. Problems that stop everything
(checkpoint, output folder, arguments) end with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

from pointstn.errors import PointstnError

HELP = "reconstruct point clouds, pose and volumes from images (PLY/NPZ/PNG/HTML/JSON per input)"
EXIT_SOME_FAILED = 1
log = logging.getLogger("pointstn.predict")


def scale_hint_value(text: str | None) -> float | None:
    """--scale-hint: a positive, finite number of metres (checked here so the error is one line)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise PointstnError(f"--scale-hint must be a positive number of metres (the object's longest edge); "
                            f"got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pointstn.inference.camera import DEFAULT_FILL
    from pointstn.inference.outputs import PREDICTION_FORMATS

    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("--ckpt", required=True, help="model checkpoint (e.g. runs/demo/best.pt)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--format", default=",".join(PREDICTION_FORMATS),
                        help=f"comma-separated subset of {','.join(PREDICTION_FORMATS)} (default: all)")
    parser.add_argument("--mask", nargs="+", metavar="MASK",
                        help="object masks: one file per input (same order), or one pattern with {stem}, "
                             "e.g. masks/{stem}.png; the mask locates the crop and whitens the background")
    parser.add_argument("--box", action="append", metavar="x0,y0,x1,y1",
                        help="object box in pixels (edges); once for all inputs or once per input")
    parser.add_argument("--scale-hint", metavar="M",
                        help="known longest edge of the object in metres: rescales every metric output")
    parser.add_argument("--zoom", choices=("rig", "fit"), default="rig",
                        help="rig: keep the rig's focal length when re-centring on the object (default); "
                             "fit: enlarge the object to fill --fill of the model input")
    parser.add_argument("--fill", type=float, default=DEFAULT_FILL, help="box side / input side under --zoom fit")
    parser.add_argument("--intrinsics", metavar="fx,fy,cx,cy",
                        help="pinhole intrinsics of the input images in pixels (default: the rig's camera scaled "
                             "to each image)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--num-points", type=int, default=4096, help="points per output cloud (at most)")
    parser.add_argument("--resample", choices=("fps", "random"),
                        help="how clouds larger than --num-points are cut (default: the checkpoint's eval.resample, "
                             "as pointstn test does)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default). On a CPU shared with other busy "
                             "processes, 1 avoids long thread-synchronisation stalls")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _intrinsics(text: str | None):
    import numpy as np

    if text is None:
        return None
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError:
        raise PointstnError(f"--intrinsics must be fx,fy,cx,cy (four numbers in pixels); got {text!r}") from None
    from pointstn.inference.camera import check_intrinsics

    return check_intrinsics(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]))


def _masks(args: argparse.Namespace, paths: list[Path]) -> list:
    if not args.mask:
        return [None] * len(paths)
    if len(args.mask) == 1 and "{stem}" in args.mask[0]:
        return [args.mask[0].replace("{stem}", p.stem) for p in paths]
    if len(args.mask) != len(paths):
        raise PointstnError(f"--mask: give one mask per input ({len(paths)}) or one pattern with {{stem}}; "
                            f"got {len(args.mask)}")
    return list(args.mask)


def _boxes(args: argparse.Namespace, count: int) -> list:
    from pointstn.inference.images import parse_box

    if not args.box:
        return [None] * count
    boxes = [parse_box(b) for b in args.box]
    if len(boxes) == 1:
        return boxes * count
    if len(boxes) != count:
        raise PointstnError(f"--box: give one box for all inputs or one per input ({count}); got {len(boxes)}")
    return boxes


def prepare_output_folder(out: str | os.PathLike[str]) -> Path:
    """Create `out` if needed and prove it is writable (one-line PointstnError otherwise)."""
    import tempfile

    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise PointstnError(f"output folder {path} exists and is not a folder") from None
    except OSError as exc:
        raise PointstnError(f"cannot create output folder {path}: {exc.strerror or exc}") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise PointstnError(f"output folder {path} is not writable: {exc.strerror or exc}") from None
    return path


def unique_stems(paths: list[Path]) -> list[str]:
    """Output names per input: the file stem, with -2, -3, ... when stems repeat (in input order)."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        count = seen.get(path.stem, 0) + 1
        seen[path.stem] = count
        stems.append(path.stem if count == 1 else f"{path.stem}-{count}")
    return stems


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pointstn import __version__
    from pointstn.inference.images import find_images
    from pointstn.inference.outputs import PREDICTION_FORMATS, parse_formats, write_prediction
    from pointstn.inference.predictor import Predictor

    formats = parse_formats(args.format, PREDICTION_FORMATS)
    scale_hint = scale_hint_value(args.scale_hint)
    if args.batch_size < 1 or args.num_points < 4 or args.threads < 0:
        raise PointstnError("--batch-size must be >= 1, --num-points >= 4 and --threads >= 0")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    intrinsics = _intrinsics(args.intrinsics)
    paths = find_images(args.inputs)
    if not paths:
        raise PointstnError(f"no input images found in {' '.join(args.inputs)}")
    masks, boxes, stems = _masks(args, paths), _boxes(args, len(paths)), unique_stems(paths)
    out = prepare_output_folder(args.out)
    predictor = Predictor.from_checkpoint(args.ckpt, device=args.device)
    log.info("model %s (step %d, pointstn %s) loaded in %.2f s", args.ckpt, predictor.checkpoint_step,
             predictor.checkpoint_version, predictor.load_s)
    checkpoint = {"path": str(Path(args.ckpt).resolve()), "step": predictor.checkpoint_step,
                  "pointstn_version": predictor.checkpoint_version}
    rig = {"image_size_px": predictor.image_size, "fov_y_deg": predictor.fov_y_deg, "distance_m": predictor.distance_m}
    failures: list[str] = []
    totals = {"load": 0.0, "model": 0.0, "geometry": 0.0, "export": 0.0}
    done = 0

    def fail(name: str, exc: BaseException) -> None:
        message = " ".join(str(exc).split())
        failures.append(name)
        tqdm.write(f"pointstn predict: error: {message if message.startswith(name) else f'{name}: {message}'}",
                   file=sys.stderr)

    progress = tqdm(total=len(paths), unit="image", desc="predict", disable=args.no_progress)
    for start in range(0, len(paths), args.batch_size):
        batch = []
        for i in range(start, min(start + args.batch_size, len(paths))):
            try:
                batch.append((i, predictor.prepare(str(paths[i]), mask=masks[i], box=boxes[i], intrinsics=intrinsics,
                                                   zoom=args.zoom, fill=args.fill)))
            except PointstnError as exc:
                fail(str(paths[i]), exc)
                progress.update(1)
        hints = [scale_hint] * len(batch)
        try:
            results = predictor.predict_prepared([p for _, p in batch], scale_hints=hints, num_points=args.num_points,
                                                   resample=args.resample)
        except PointstnError as exc:  # e.g. a scale hint on a degenerate prediction: the whole batch
            for i, _ in batch:
                fail(str(paths[i]), exc)
            progress.update(len(batch))
            continue
        for (i, _), result in zip(batch, results, strict=True):
            source = {"source": str(paths[i]), "size_hw": list(result.view.source_size),
                      "mask": None if masks[i] is None else str(masks[i]),
                      "box_xyxy": None if boxes[i] is None else list(boxes[i]), "zoom": args.zoom}
            try:
                begin = time.perf_counter()
                write_prediction(result, directory=out, stem=stems[i], formats=formats,
                                 run={"checkpoint": checkpoint, "rig": rig, "input": source,
                                      "scale_hint_m": scale_hint})
                totals["export"] += time.perf_counter() - begin
            except (PointstnError, OSError) as exc:
                fail(str(paths[i]), exc)
            else:
                done += 1
                totals["load"] += result.timings.load_s
                totals["model"] += result.timings.model_s
                totals["geometry"] += result.timings.geometry_s
            progress.update(1)
    progress.close()
    if done:
        per = {k: 1000.0 * v / done for k, v in totals.items()}
        print(f"{done} of {len(paths)} inputs written to {out} (pointstn {__version__}); mean per image: "
              f"load {per['load']:.1f} ms, model {per['model']:.1f} ms (batch {args.batch_size}), "
              f"geometry {per['geometry']:.1f} ms, export {per['export']:.1f} ms")
    if failures:
        print(f"pointstn predict: {len(failures)} of {len(paths)} inputs failed", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0
