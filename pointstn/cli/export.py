"""`pointstn export`: convert clouds between PLY and NPZ and render them (PNG figure, HTML viewer).

    pointstn export pred.npz --out out/                                # pred.ply, .npz, .png, .html
    pointstn export --dataset data/demo --object mug_0003 --view 2 --out out/   # ground truth
    pointstn export --dataset data/demo --object mug_0003 --view 2 --compare out/view2.ply --out out/

Sources are cloud files (.ply, a pointstn cloud .npz or a prediction .npz) and, with --dataset and
--object, the object's ground-truth surface points (`objects/<id>.npz`) moved into the camera frame of
view --view (metres, like predictions; --frame canonical keeps the object frame). Each source gets
its own files; with --compare, all sources and the compared clouds also share one HTML page and one
PNG figure (<name>.html/.png), each cloud in its own colour. Format "image" writes the dataset
view's RGB image (to run `pointstn predict` on it). A source that fails is reported and skipped
(exit code 1); none of its files are left behind, and files of an earlier export under the same
names stay as they were (`pointstn.io.staged`: staged, then moved into place together).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pointstn.errors import PointstnError

HELP = "convert and render point clouds (PLY/NPZ/PNG/HTML), including dataset ground truth"
EXPORT_FORMATS = ("ply", "npz", "png", "html", "image")
EXIT_SOME_FAILED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clouds", nargs="*", metavar="CLOUD", help="cloud files (.ply or .npz)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--format", default="ply,npz,png,html",
                        help=f"comma-separated subset of {','.join(EXPORT_FORMATS)} (default: ply,npz,png,html)")
    parser.add_argument("--dataset", help="prepared dataset folder (with --object)")
    parser.add_argument("--object", help="object id in --dataset, e.g. mug_0003")
    parser.add_argument("--view", type=int, default=0, help="dataset view whose camera frame to use (default 0)")
    parser.add_argument("--frame", choices=("camera", "canonical"), default="camera",
                        help="frame of the ground truth: camera of --view (default) or the object frame")
    parser.add_argument("--compare", nargs="+", metavar="CLOUD",
                        help="clouds drawn together with the sources in one page and figure")
    parser.add_argument("--name", default="compare", help="file stem of the comparison page/figure")


@dataclass(frozen=True, eq=False)
class Source:
    """One cloud to export: name, (N, 3) points, units, optional (H, W, 3) image, a description line and
    the file it was read from (None for dataset ground truth)."""

    name: str
    points: np.ndarray
    units: str
    image: np.ndarray | None
    note: str
    path: Path | None = None


def _file_source(path: str) -> Source:
    from pointstn.inference.outputs import read_cloud

    points, meta = read_cloud(path)
    if points.shape[0] == 0:
        raise PointstnError(f"{path}: the cloud has no points")
    prediction = meta.get("format") == "pointstn-prediction"
    units = "m" if prediction else str(meta.get("units", "as in the file"))
    note = "prediction, camera frame (OpenCV), metres" if prediction else "cloud file"
    return Source(name=Path(path).stem, points=np.asarray(points, dtype=np.float64), units=units, image=None, note=note,
                  path=Path(path))


def _dataset_source(root: str, object_id: str, view: int, frame: str) -> Source:
    from pointstn.data.format import object_file, read_manifest, read_object, resolve_inside

    manifest = read_manifest(Path(root))
    known = manifest["objects"]
    if object_id not in known:
        sample = ", ".join(sorted(known)[:5])
        raise PointstnError(f"dataset {root} has no object '{object_id}' (e.g. {sample})")
    arrays, _ = read_object(resolve_inside(Path(root), object_file(object_id)),
                            arrays=("surface_points", "rotations", "translations", "images"))
    views = arrays["rotations"].shape[0]
    if not 0 <= view < views:
        raise PointstnError(f"object '{object_id}' has views 0..{views - 1}; got --view {view}")
    points = arrays["surface_points"].astype(np.float64)
    if frame == "camera":
        points = points @ arrays["rotations"][view].T + arrays["translations"][view]
    return Source(name=f"{object_id}_view{view}_truth" if frame == "camera" else f"{object_id}_truth", points=points,
                  units="m", image=arrays["images"][view],
                  note=f"ground truth, {f'camera frame of view {view}' if frame == 'camera' else 'object frame'}, metres")


def _writers(source: Source, out: Path, formats: tuple[str, ...]):
    from pointstn import __version__
    from pointstn.inference.outputs import write_ply_cloud, write_png_figure
    from pointstn.io.atomic import atomic_write_bytes
    from pointstn.io.cloud import PointCloud
    from pointstn.io.html import ViewerCloud, write_cloud_viewer
    from pointstn.io.npz import save_cloud_npz

    def image_png(path: Path) -> None:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(source.image).save(buffer, format="PNG")
        atomic_write_bytes(path, buffer.getvalue())

    meta = {"source": source.note, "units": source.units, "pointstn_version": __version__}
    writers = {
        "ply": (f"{source.name}.ply", lambda p: write_ply_cloud(p, source.points, comments=[
            f"pointstn {__version__} export", source.note, f"units: {source.units}"])),
        "npz": (f"{source.name}.npz", lambda p: save_cloud_npz(p, PointCloud(points=source.points.astype(np.float32)),
                                                               meta=meta)),
        "png": (f"{source.name}.png", lambda p: write_png_figure(p, image=source.image, label=source.name,
                                                                 clouds={source.name: source.points})),
        "html": (f"{source.name}.html", lambda p: write_cloud_viewer(
            p, [ViewerCloud(source.name, source.points)], title=source.name,
            info=[("content", source.note), ("units", source.units)], units=source.units)),
        "image": (f"{source.name}.image.png", image_png),
    }
    plan = []
    for fmt in formats:
        if fmt == "image" and source.image is None:
            continue  # only dataset views carry an image
        name, writer = writers[fmt]
        if source.path is not None and (out / name).resolve() == source.path.resolve():
            raise PointstnError(f"{source.path}: exporting to {out / name} would overwrite the input; "
                                "choose another --out")
        plan.append((out / name, writer))
    return plan


def run(args: argparse.Namespace) -> int:
    from pointstn.cli.predict import prepare_output_folder
    from pointstn.inference.outputs import parse_formats, write_png_figure
    from pointstn.io.html import ViewerCloud, write_cloud_viewer
    from pointstn.io.staged import write_all_or_nothing

    formats = parse_formats(args.format, EXPORT_FORMATS)
    if (args.dataset is None) != (args.object is None):
        raise PointstnError("--dataset and --object go together")
    if not args.clouds and args.dataset is None:
        raise PointstnError("nothing to export: give cloud files and/or --dataset DIR --object ID")
    out = prepare_output_folder(args.out)
    failures = 0
    sources: list[Source] = []
    loaders = [(path, lambda p=path: _file_source(p)) for path in args.clouds]
    if args.dataset is not None:
        loaders.append((f"{args.dataset}:{args.object}",
                        lambda: _dataset_source(args.dataset, args.object, args.view, args.frame)))
    for label, load in loaders:
        try:
            source = load()
            written = write_all_or_nothing(_writers(source, out, formats))
        except PointstnError as exc:
            failures += 1
            print(f"pointstn export: error: {' '.join(str(exc).split())}", file=sys.stderr)
            continue
        sources.append(source)
        print(f"{label}: {', '.join(p.name for p in written)}")
    if args.compare:
        compared = sources + [_file_source(path) for path in args.compare]
        image = next((s.image for s in compared if s.image is not None), None)
        units = {s.units for s in compared}
        plan = []
        if "html" in formats or "png" in formats:
            if "html" in formats:
                plan.append((out / f"{args.name}.html", lambda p: write_cloud_viewer(
                    p, [ViewerCloud(s.name, s.points) for s in compared], title=" vs ".join(s.name for s in compared),
                    info=[(s.name, s.note) for s in compared], units=units.pop() if len(units) == 1 else "mixed")))
            if "png" in formats:
                plan.append((out / f"{args.name}.png", lambda p: write_png_figure(
                    p, image=image, label=" vs ".join(s.name for s in compared),
                    clouds={s.name: s.points for s in compared})))
            written = write_all_or_nothing(plan)
            print(f"comparison: {', '.join(p.name for p in written)}")
    if failures:
        return EXIT_SOME_FAILED
    return 0
