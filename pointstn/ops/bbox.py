"""Bounding boxes of padded point clouds and the normalized canonical frame.

Batched clouds are padded tensors `(B, P, 3)` with optional `lengths (B,)` (PyTorch3D convention:
cloud `b` is `points[b, :lengths[b]]`; the rest is padding and never read).

- `bbox` / `longest_edge`: the axis-aligned box of every cloud, differentiable like `amin`/`amax`.
- `normalize_to_unit`: DESIGN.md section 2's *normalized canonical frame*: origin at the bounding-box
  centre, divided by the longest bounding-box edge, so the cloud spans exactly [-0.5, 0.5] along its
  longest axis and lies inside [-0.5, 0.5]^3.
- `oriented_bbox`: a minimal-volume-ish oriented box of one cloud (trimesh's
  `trimesh.bounds.oriented_bounds` on the convex hull; see its docstring), robust to degenerate
  (coincident, collinear, planar) inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def checked_lengths(points: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Validate a padded cloud and return its lengths.

    Args:
        points: (B, P, 3) padded clouds.
        lengths: (B,) integer number of valid points per cloud, or None for "all P".

    Returns:
        (B,) int64 lengths on `points.device`.

    Raises:
        ValueError: wrong shapes, non-integer lengths, or lengths outside [0, P].
    """
    if not torch.is_tensor(points) or points.ndim != 3 or points.shape[-1] != 3:
        got = tuple(points.shape) if torch.is_tensor(points) else type(points).__name__
        raise ValueError(f"points must be a (B, P, 3) tensor; got {got}")
    batch, num_points = points.shape[:2]
    if lengths is None:
        return torch.full((batch,), num_points, dtype=torch.int64, device=points.device)
    if not torch.is_tensor(lengths) or lengths.shape != (batch,):
        got = tuple(lengths.shape) if torch.is_tensor(lengths) else type(lengths).__name__
        raise ValueError(f"lengths must be a ({batch},) tensor for points of shape {tuple(points.shape)}; got {got}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be an integer tensor; got {lengths.dtype}")
    if batch and (lengths.min() < 0 or lengths.max() > num_points):
        raise ValueError(f"lengths must lie in [0, {num_points}]; got {lengths.tolist()}")
    return lengths.to(device=points.device, dtype=torch.int64)


def padding_mask(points: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """(B, P) bool, True for valid points (index < lengths[b]) and False for padding."""
    lengths = checked_lengths(points, lengths)
    return torch.arange(points.shape[1], device=points.device)[None, :] < lengths[:, None]


@dataclass(frozen=True)
class BBox:
    """Axis-aligned bounding boxes of a batch of clouds.

    min: (B, 3) smallest coordinate per axis.
    max: (B, 3) largest coordinate per axis.
    center: (B, 3) (min + max) / 2.
    extents: (B, 3) max - min (edge lengths along x, y, z).
    """

    min: torch.Tensor
    max: torch.Tensor
    center: torch.Tensor
    extents: torch.Tensor


def bbox(points: torch.Tensor, lengths: torch.Tensor | None = None) -> BBox:
    """Axis-aligned bounding box of every cloud of a padded batch.

    Args:
        points: (B, P, 3) padded clouds.
        lengths: (B,) number of valid points per cloud, or None for all P.

    Returns:
        BBox with (B, 3) fields; gradients flow to the extreme points (as with `amin`/`amax`).

    Raises:
        ValueError: bad shapes/lengths, or an empty cloud (its box is undefined).
    """
    lengths = checked_lengths(points, lengths)
    if (lengths == 0).any():
        empty = torch.nonzero(lengths == 0).flatten().tolist()
        raise ValueError(f"bbox of an empty cloud is undefined; clouds {empty} have length 0")
    valid = padding_mask(points, lengths)[..., None]
    inf = torch.tensor(float("inf"), dtype=points.dtype, device=points.device)
    lo = torch.where(valid, points, inf).amin(dim=1)
    hi = torch.where(valid, points, -inf).amax(dim=1)
    return BBox(min=lo, max=hi, center=0.5 * (lo + hi), extents=hi - lo)


def longest_edge(points: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) longest axis-aligned bounding-box edge of every cloud (same units as `points`)."""
    return bbox(points, lengths).extents.amax(dim=-1)


@dataclass(frozen=True)
class Normalized:
    """A batch of clouds in the normalized canonical frame, and how to get back.

    points: (B, P, 3) `(original - center[:, None]) / scale[:, None, None]`; padding rows are
        transformed like valid rows (downstream ops ignore them through `lengths`).
    center: (B, 3) bounding-box centre of the original clouds.
    scale: (B,) longest bounding-box edge of the original clouds (> 0).
    """

    points: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor

    def denormalize(self, points: torch.Tensor) -> torch.Tensor:
        """Map (B, Q, 3) points of the normalized frame back to the original frame."""
        return points * self.scale[:, None, None] + self.center[:, None, :]


def normalize_to_unit(points: torch.Tensor, lengths: torch.Tensor | None = None) -> Normalized:
    """Centre every cloud at its bounding-box centre and divide by its longest edge.

    The result spans exactly [-0.5, 0.5] along each cloud's longest axis and lies inside
    [-0.5, 0.5]^3 (DESIGN.md section 2, normalized canonical frame). Differentiable.

    Args:
        points: (B, P, 3) padded clouds.
        lengths: (B,) number of valid points per cloud, or None for all P.

    Raises:
        ValueError: an empty cloud, or a cloud whose points all coincide (longest edge 0).
    """
    box = bbox(points, lengths)
    scale = box.extents.amax(dim=-1)
    if (scale <= 0).any():
        bad = torch.nonzero(scale <= 0).flatten().tolist()
        raise ValueError(f"cannot normalize clouds {bad}: all their points coincide (longest edge 0)")
    normalized = (points - box.center[:, None, :]) / scale[:, None, None]
    return Normalized(points=normalized, center=box.center, scale=scale)


@dataclass(frozen=True)
class OrientedBox:
    """An oriented bounding box.

    center: (3,) box centre.
    axes: (3, 3) rotation (det +1) whose COLUMNS are the box axes, in the order of `extents`.
    extents: (3,) full edge lengths along the axes, sorted descending (0 along degenerate directions).

    A point p is inside iff `abs((p - center) @ axes) <= extents / 2` componentwise.
    """

    center: torch.Tensor
    axes: torch.Tensor
    extents: torch.Tensor

    def to_local(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 3) points -> their coordinates in the box frame (centre at the origin)."""
        return (points - self.center) @ self.axes


# A direction whose spread is below this fraction of the largest spread counts as degenerate.
_DEGENERATE_RELATIVE_SPREAD = 1e-9


def oriented_bbox(points: torch.Tensor) -> OrientedBox:
    """Minimal-volume-ish oriented bounding box of one cloud.

    Method: the points' principal axes give the rank (how many directions have non-negligible
    spread, relative to the largest). Full-rank clouds go to `trimesh.bounds.oriented_bounds`, which
    takes the convex hull, tries (a deduplicated set of) hull face normals as one box axis and, for
    each, the minimal-area rectangle of the projection (rotating calipers over hull edges); that is
    the exact optimum whenever the minimal box has a face flush with a hull face, which is the usual
    case. Planar clouds get the minimal-area rectangle in their plane and a zero third extent;
    collinear clouds a segment; coincident points a zero box. No input crashes.

    Args:
        points: (P, 3) one cloud, P >= 1 (computed in float64 with numpy).

    Returns:
        OrientedBox in the dtype/device of `points` (float64 if `points` is not floating point).
    """
    if not torch.is_tensor(points) or points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
        got = tuple(points.shape) if torch.is_tensor(points) else type(points).__name__
        raise ValueError(f"oriented_bbox expects a non-empty (P, 3) tensor; got {got}")
    pts = points.detach().cpu().double().numpy()
    if not np.isfinite(pts).all():
        raise ValueError("oriented_bbox got non-finite coordinates")
    center, axes, extents = _oriented_bbox_numpy(pts)
    # sort descending and make the frame right-handed
    order = np.argsort(-extents, kind="stable")
    axes, extents = axes[:, order], extents[order]
    if np.linalg.det(axes) < 0:
        axes[:, 2] = -axes[:, 2]
    dtype = points.dtype if points.dtype.is_floating_point else torch.float64
    as_tensor = lambda a: torch.as_tensor(a, dtype=dtype, device=points.device)
    return OrientedBox(center=as_tensor(center), axes=as_tensor(axes), extents=as_tensor(extents))


def _oriented_bbox_numpy(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P, 3) float64 -> (center (3,), axes (3, 3) orthonormal columns, extents (3,)), unsorted."""
    mean = pts.mean(axis=0)
    centered = pts - mean
    # thin SVD: with full_matrices=True numpy also forms the (P, P) left factor (180 ms at 4096 points);
    # fewer than 3 points need the full (3, 3) right factor
    _, _, vt = np.linalg.svd(centered, full_matrices=pts.shape[0] < 3)
    principal = vt.T  # columns: principal directions, largest spread first
    local = centered @ principal
    spread = np.ptp(local, axis=0)
    rank = int((spread > _DEGENERATE_RELATIVE_SPREAD * spread[0]).sum()) if spread[0] > 0 else 0
    if rank == 3:
        import trimesh
        from scipy.spatial import QhullError

        try:
            to_origin, extents = trimesh.bounds.oriented_bounds(pts, ordered=False)
        except (QhullError, ValueError):  # qhull precision failure on a nearly flat hull
            return _box_in_frame(pts, principal)
        axes = to_origin[:3, :3].T.copy()  # to_origin rotates world -> box frame: its rows are the axes
        center = -axes @ to_origin[:3, 3]
        return center, axes, np.asarray(extents, dtype=np.float64)
    if rank == 2:
        import trimesh

        to_origin_2d, _ = trimesh.bounds.oriented_bounds_2D(local[:, :2])
        rot2 = to_origin_2d[:2, :2]  # rows: rectangle axes in principal (u, v) coordinates
        in_plane = principal[:, :2] @ rot2.T  # (3, 2) rectangle axes in world coordinates
        frame = np.column_stack([in_plane, principal[:, 2]])
        return _box_in_frame(pts, frame, rank=2)
    return _box_in_frame(pts, principal, rank=rank)  # rank 0 or 1: PCA axes are exact


def _box_in_frame(pts: np.ndarray, frame: np.ndarray, *, rank: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tight box of `pts` with fixed orthonormal axes `frame` (columns); the extents along columns
    `rank:` (directions of rounding-level spread) are set to exactly 0."""
    local = pts @ frame
    lo, hi = local.min(axis=0), local.max(axis=0)
    extents = hi - lo
    extents[rank:] = 0.0
    return frame @ (0.5 * (lo + hi)), frame.copy(), extents
