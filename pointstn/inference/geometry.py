"""Geometry a grasp planner needs, derived from one predicted cloud (camera frame, metres).

- solid volume: `pointstn.ops.volume.solid_volume`, the estimator behind the `vol_rel_err` metric
  (DESIGN.md section 3), on the camera-frame cloud exactly as `pointstn test` computes it, so the
  measured errors apply. It is the *filled* volume: an open container counts as solid up to its rim
  opening only where the opening is narrower than the closing radius; `None` (with
  `encloses_volume=False`) when the cloud encloses no resolvable interior (flat or open surfaces).
- convex-hull volume: always defined (0 for degenerate clouds); an upper bound of the solid volume.
- oriented bounding box: `pointstn.ops.bbox.oriented_bbox` in the camera frame.
- longest edge: the longest axis-aligned bounding-box edge in the canonical (object) frame, the
  quantity a scale hint replaces (it is the dataset's `extents.max()` definition).

Units: metres, cubic metres; `UNITS` states them for every field that is written out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pointstn.errors import PointstnError

UNITS = {
    "points_camera": "m",
    "points_canonical": "normalized (longest canonical bounding-box edge = 1)",
    "points_canonical_m": "m",
    "pose.rotation": "dimensionless (canonical -> camera)",
    "pose.scale": "m per normalized unit",
    "pose.translation": "m",
    "solid_volume": "m^3",
    "convex_hull_volume": "m^3",
    "obb.center": "m",
    "obb.axes": "unit vectors (columns), camera frame",
    "obb.extents": "m",
    "longest_edge": "m",
    "timings": "s",
}


@dataclass(frozen=True, eq=False)
class DerivedGeometry:
    """Derived quantities of one cloud (module docstring).

    solid_volume_m3: filled volume, or None when `encloses_volume` is False.
    encloses_volume: the cloud bounds a resolvable interior.
    convex_hull_volume_m3: volume of the convex hull.
    obb_center_m: (3,) oriented box centre, camera frame.
    obb_axes: (3, 3) rotation whose columns are the box axes (camera frame), in the order of extents.
    obb_extents_m: (3,) full edge lengths, descending.
    longest_edge_m: longest axis-aligned edge of the canonical-frame cloud.
    """

    solid_volume_m3: float | None
    encloses_volume: bool
    convex_hull_volume_m3: float
    obb_center_m: np.ndarray
    obb_axes: np.ndarray
    obb_extents_m: np.ndarray
    longest_edge_m: float

    def to_json(self) -> dict:
        return {
            "solid_volume_m3": self.solid_volume_m3,
            "encloses_volume": self.encloses_volume,
            "convex_hull_volume_m3": self.convex_hull_volume_m3,
            "obb": {"center_m": self.obb_center_m.tolist(), "axes": self.obb_axes.tolist(),
                    "extents_m": self.obb_extents_m.tolist()},
            "longest_edge_m": self.longest_edge_m,
        }


def canonical_longest_edge(points_canonical: np.ndarray) -> float:
    """Longest axis-aligned bounding-box edge of an (N, 3) cloud (its own units)."""
    return float(np.ptp(np.asarray(points_canonical, dtype=np.float64), axis=0).max())


def scale_hint_factor(scale_hint_m: float, predicted_longest_edge_m: float) -> float:
    """The factor every metric length is multiplied by: hint / predicted longest edge (volumes: cubed).

    Raises PointstnError unless the hint is a positive finite number and the prediction has a
    positive longest edge.
    """
    if isinstance(scale_hint_m, bool) or not isinstance(scale_hint_m, (int, float)) or not (
            math.isfinite(scale_hint_m) and scale_hint_m > 0):
        raise PointstnError(f"scale hint must be a positive number of metres (the object's longest edge); "
                            f"got {scale_hint_m!r}")
    if not predicted_longest_edge_m > 0:
        raise PointstnError("cannot apply a scale hint: the predicted cloud has no extent (all points coincide)")
    return float(scale_hint_m) / float(predicted_longest_edge_m)


def derive_geometry(points_camera: np.ndarray, points_canonical_m: np.ndarray) -> DerivedGeometry:
    """Volumes, oriented box and longest edge of one cloud.

    Args:
        points_camera: (N, 3) camera-frame points, metres (N >= 1).
        points_canonical_m: (N, 3) the same points in the canonical frame, metres.
    """
    import torch

    from pointstn.ops.bbox import oriented_bbox
    from pointstn.ops.volume import convex_hull_volume, solid_volume

    camera = torch.as_tensor(np.asarray(points_camera, dtype=np.float64))
    if camera.ndim != 2 or camera.shape[1] != 3 or camera.shape[0] == 0:
        raise ValueError(f"points_camera must be a non-empty (N, 3) array; got {tuple(camera.shape)}")
    solid = solid_volume(camera[None])
    encloses = bool(solid.encloses[0])
    box = oriented_bbox(camera)
    return DerivedGeometry(
        solid_volume_m3=float(solid.volume[0]) if encloses else None,
        encloses_volume=encloses,
        convex_hull_volume_m3=float(convex_hull_volume(camera[None])[0]),
        obb_center_m=_frozen(box.center.numpy()),
        obb_axes=_frozen(box.axes.numpy()),
        obb_extents_m=_frozen(box.extents.numpy()),
        longest_edge_m=canonical_longest_edge(points_canonical_m),
    )


def _frozen(values: np.ndarray) -> np.ndarray:
    out = np.array(values, dtype=np.float64)
    out.flags.writeable = False
    return out
