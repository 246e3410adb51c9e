"""The files `pointstn predict` and `pointstn export` write, all or nothing per input.

Per prediction (`write_prediction`), named <stem>.<ext>:
    ply   binary PLY, camera frame, metres, colours by depth (MeshLab, Open3D, CloudCompare)
    npz   arrays (below) + the JSON summary as `meta_json`; `np.load(path, allow_pickle=False)`
    png   the model's input image beside the cloud from three viewpoints
    html  self-contained interactive viewer (pointstn.io.html), works offline
    json  summary: pose, geometry, units, view, scale, timings, checkpoint, pointstn version

Prediction NPZ arrays: points (N, 3) float32 camera frame m; points_canonical (N, 3) float32
normalized; points_canonical_m (N, 3) float32 m; rotation (3, 3), scale (), translation (3,) float64
(canonical -> camera); obb_center (3,), obb_axes (3, 3), obb_extents (3,) float64 camera frame m;
solid_volume_m3 () (NaN when the cloud encloses no volume); convex_hull_volume_m3 ().

Every file is written atomically; if any output of an input fails, the outputs already written for
that input are removed before the error propagates (a file from an earlier run under the same name
that was already replaced is gone too: no output of a failed input survives).
"""

from __future__ import annotations

import json
import math
import os
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pointstn import __version__
from pointstn.errors import PointstnError
from pointstn.inference.geometry import UNITS
from pointstn.io.archive import check_npz_members
from pointstn.io.atomic import atomic_write, atomic_write_text
from pointstn.io.staged import write_all_or_nothing

PREDICTION_FORMATS = ("ply", "npz", "png", "html", "json")
PREDICTION_NPZ_FORMAT = "pointstn-prediction"
FRAMES = {
    "camera": "OpenCV camera frame of the input image (x right, y down, z forward), metres",
    "canonical": "object frame: origin at the bounding-box centre, axes of the predicted canonical pose",
}
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


def parse_formats(text: str, valid: Sequence[str]) -> tuple[str, ...]:
    """'ply,png' -> ('ply', 'png'), in the order of `valid`; unknown names list the valid ones."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise PointstnError(f"unknown output format '{unknown[0] if unknown else text}'; valid: {','.join(valid)}")
    return tuple(v for v in valid if v in names)


def depth_colors(points: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 viridis colours by z (near = yellow, far = purple), as in the HTML viewer."""
    z = np.asarray(points, dtype=np.float64)[:, 2]
    span = float(np.ptp(z)) or 1.0
    t = 1.0 - (z - z.min()) / span
    x = t * (len(_VIRIDIS) - 1)
    i = np.minimum(np.floor(x).astype(int), len(_VIRIDIS) - 2)
    f = (x - i)[:, None]
    return np.rint(_VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f).astype(np.uint8)


def write_ply_cloud(path: Path, points: np.ndarray, *, comments: Sequence[str]) -> None:
    from pointstn.io.ply import write_ply

    points = np.asarray(points, dtype=np.float32)
    write_ply(path, points, colors=depth_colors(points), comments=comments)


def write_png_figure(path: Path, *, image: np.ndarray | None, clouds: Mapping[str, np.ndarray], label: str) -> None:
    from pointstn.io.figures import VIEWS, clouds_figure

    clouds_figure([(image, dict(clouds), label)], path, views=VIEWS)


def prediction_summary(result, *, run: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON summary of one PredictionResult; `run` adds checkpoint and input details."""
    return {
        "format": PREDICTION_NPZ_FORMAT,
        "pointstn_version": __version__,
        **run,
        "frames": FRAMES,
        "units": dict(result.units),
        "pose": result.pose.to_json(),
        "geometry": result.geometry.to_json(),
        "scale": {"source": result.scale_source, "factor": result.scale_factor,
                  "note": "metric values assume the object at the rig distance unless a scale hint was given"},
        "view": result.view.to_json(),
        "cloud": {"num_points": int(result.points_camera.shape[0]), "source": result.cloud_source,
                  "resampling": result.resampling},
        "timings_s": {"load": result.timings.load_s, "model": result.timings.model_s,
                      "geometry": result.timings.geometry_s, "batch_size": result.timings.batch_size},
    }


def write_prediction_npz(path: Path, result, summary: Mapping[str, Any]) -> None:
    g = result.geometry
    arrays = {
        "points": result.points_camera,
        "points_canonical": result.points_canonical,
        "points_canonical_m": result.points_canonical_m,
        "rotation": result.pose.rotation,
        "scale": np.float64(result.pose.scale),
        "translation": result.pose.translation,
        "obb_center": g.obb_center_m,
        "obb_axes": g.obb_axes,
        "obb_extents": g.obb_extents_m,
        "solid_volume_m3": np.float64(math.nan if g.solid_volume_m3 is None else g.solid_volume_m3),
        "convex_hull_volume_m3": np.float64(g.convex_hull_volume_m3),
        "meta_json": np.array(json.dumps(summary, allow_nan=False)),
    }
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)


def write_prediction(result, *, directory: Path, stem: str, formats: Sequence[str], run: Mapping[str, Any]
                     ) -> dict[str, Path]:
    """Write the requested formats for one result; returns {format: path}. All or nothing (module doc)."""
    from pointstn.io.html import ViewerCloud, write_cloud_viewer

    paths = {fmt: directory / f"{stem}.{fmt}" for fmt in formats}
    summary = prediction_summary(result, run={**run, "outputs": {k: p.name for k, p in paths.items()}})
    g = result.geometry
    volume = "does not enclose a volume" if g.solid_volume_m3 is None else f"{g.solid_volume_m3 * 1e6:.1f} cm^3"
    info = [("solid volume", volume), ("convex hull volume", f"{g.convex_hull_volume_m3 * 1e6:.1f} cm^3"),
            ("box extents", " x ".join(f"{e * 100:.1f}" for e in g.obb_extents_m) + " cm"),
            ("scale", f"{result.scale_source} (x{result.scale_factor:.4g})"),
            ("frame", "camera (OpenCV: x right, y down, z forward), metres")]
    comments = [f"pointstn {__version__} prediction", "frame: OpenCV camera (x right, y down, z forward)",
                "units: metres", f"scale: {result.scale_source}"]
    writers: dict[str, Callable[[Path], None]] = {
        "ply": lambda p: write_ply_cloud(p, result.points_camera, comments=comments),
        "npz": lambda p: write_prediction_npz(p, result, summary),
        "png": lambda p: write_png_figure(p, image=result.model_input, label=f"model input\n{Path(result.name).name}",
                                          clouds={"prediction (camera frame)": result.points_camera}),
        "html": lambda p: write_cloud_viewer(p, [ViewerCloud(Path(result.name).name, result.points_camera)],
                                             title=f"pointstn prediction: {result.name}", info=info, units="m"),
    }
    start = time.perf_counter()
    plan = [(paths[f], writers[f]) for f in formats if f != "json"]

    def json_writer(path: Path) -> None:
        summary["timings_s"]["export"] = time.perf_counter() - start  # the other formats, not this file
        atomic_write_text(path, json.dumps(summary, indent=1, allow_nan=False) + "\n")

    if "json" in formats:
        plan.append((paths["json"], json_writer))
    write_all_or_nothing(plan)
    return paths


def read_cloud(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """((N, 3) points, meta) from a PLY, a pointstn cloud NPZ or a prediction NPZ (camera-frame points).

    meta: the NPZ's JSON (empty for PLY); `meta.get("format") == "pointstn-prediction"` for predictions.
    """
    from pointstn.io.npz import load_cloud_npz
    from pointstn.io.ply import read_ply

    path = Path(path)
    if not path.is_file():
        raise PointstnError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return np.asarray(read_ply(path).points), {}
    if suffix != ".npz":
        raise PointstnError(f"{path}: unsupported cloud file (use .ply or .npz)")
    check_npz_members(path, shown=str(path))
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            meta_text = str(archive["meta_json"]) if "meta_json" in keys else "{}"
            points = archive["points"] if "points" in keys else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise PointstnError(f"{path}: not a valid .npz file ({type(exc).__name__}: {exc})") from None
    try:
        meta = json.loads(meta_text)
    except ValueError as exc:
        raise PointstnError(f"{path}: meta_json is not valid JSON ({exc})") from None
    if isinstance(meta, dict) and meta.get("format") == PREDICTION_NPZ_FORMAT:
        if points is None or points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
            raise PointstnError(f"{path}: prediction NPZ without a finite (N, 3) 'points' array")
        return points, meta
    cloud, meta = load_cloud_npz(path)
    return np.asarray(cloud.points), meta


__all__ = [
    "PREDICTION_FORMATS",
    "UNITS",
    "depth_colors",
    "parse_formats",
    "read_cloud",
    "write_all_or_nothing",
    "write_prediction",
]
