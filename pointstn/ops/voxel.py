"""Voxelization of padded point clouds into sparse voxel sets, and occupancy targets.

Grid convention (shared by the voxelizer, the spconv decoder, the point head and the losses):
- A cubic grid of `resolution` R cells per axis covers the closed cube [lo, hi]^3 (default the
  normalized canonical frame [-0.5, 0.5]^3); `voxel_size = (hi - lo) / R`.
- A point p falls in cell `floor((p - lo) / voxel_size)` per axis. Cells are half-open
  [lo + n h, lo + (n + 1) h) except the last, which also holds the face p = hi: the normalized
  canonical frame puts a cloud's extreme points exactly on +-0.5, and they must not be lost.
  Points outside [lo, hi] (or non-finite) are outside the grid: they get `point_to_voxel = -1` and
  are counted in `Voxels.num_outside`, never clamped into the border cells.
- Sparse coords are `(V, 4) int32 [b, i, j, k]`, i along x, j along y, k along z, sorted
  lexicographically and unique. This is the `indices` layout `spconv.SparseConvTensor` takes, with
  `spatial_shape = [R, R, R]` meaning (x, y, z); its `.dense()` is then `(B, C, R_x, R_y, R_z)`,
  the same index order as the dense occupancy `(B, R, R, R)` here.
- Linear keys: `((b * R + i) * R + j) * R + k` (int64), whose order is the coords' order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch

from pointstn.ops.bbox import checked_lengths, padding_mask


@dataclass(frozen=True)
class Voxels:
    """A sparse voxel set built from a batch of padded clouds.

    coords: (V, 4) int32 [b, i, j, k], sorted lexicographically, unique (see module docstring).
    features: (V, C) mean of the features of the points in each voxel, or None if no features
        were given. Differentiable w.r.t. the point features.
    counts: (V,) int64 number of points in each voxel (>= 1).
    point_to_voxel: (B, P) int64 row of `coords` holding each point; -1 for padding and for points
        outside the grid.
    num_outside: (B,) int64 number of valid (non-padding) points of each cloud outside the grid.
    batch_size: B.
    resolution, lo, hi: the grid (module docstring).
    """

    coords: torch.Tensor
    features: torch.Tensor | None
    counts: torch.Tensor
    point_to_voxel: torch.Tensor
    num_outside: torch.Tensor
    batch_size: int
    resolution: int
    lo: float
    hi: float

    @property
    def voxel_size(self) -> float:
        """Edge length of one voxel, (hi - lo) / resolution."""
        return (self.hi - self.lo) / self.resolution


def voxelize(
    points: torch.Tensor,
    features: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    *,
    resolution: int,
    lo: float = -0.5,
    hi: float = 0.5,
) -> Voxels:
    """Group the points of a padded batch into the voxels of an R^3 grid; scatter-mean the features.

    Args:
        points: (B, P, 3) padded clouds (not differentiated through: cell membership is discrete).
        features: (B, P, C) per-point features, or None.
        lengths: (B,) number of valid points per cloud, or None for all P.
        resolution: R, cells per axis (>= 1).
        lo, hi: the grid covers [lo, hi]^3, lo < hi.

    Returns:
        Voxels (see its docstring). Vectorized: one `torch.unique` over int64 keys and one
        `index_add_rows` for the features.
    """
    _check_grid(resolution, lo, hi)
    lengths = checked_lengths(points, lengths)
    B, P, _ = points.shape
    if features is not None and (features.ndim != 3 or features.shape[:2] != (B, P)):
        raise ValueError(f"features must be ({B}, {P}, C) to match points; got {tuple(features.shape)}")
    valid = padding_mask(points, lengths)
    cells, inside = _cells(points, resolution=resolution, lo=lo, hi=hi)
    keep = valid & inside
    batch_index = torch.arange(B, device=points.device)[:, None].expand(B, P)
    keys = linearize_coords(torch.cat((batch_index[keep][:, None], cells[keep]), dim=1), resolution=resolution)
    unique_keys, inverse, counts = torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
    point_to_voxel = torch.full((B, P), -1, dtype=torch.int64, device=points.device)
    point_to_voxel[keep] = inverse
    pooled = None
    if features is not None:
        summed = index_add_rows(features.new_zeros(unique_keys.shape[0], features.shape[-1]), inverse, features[keep])
        pooled = summed / counts[:, None].to(features.dtype)
    return Voxels(
        coords=delinearize_keys(unique_keys, resolution=resolution),
        features=pooled,
        counts=counts,
        point_to_voxel=point_to_voxel,
        num_outside=(valid & ~inside).sum(dim=1),
        batch_size=B,
        resolution=resolution,
        lo=float(lo),
        hi=float(hi),
    )


def index_add_rows(base: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`base.index_add(0, index, rows)`, whose backward pass keeps only `index`.

    torch's `index_add` also keeps `rows` (a copy, when they were gathered) for its backward pass,
    and an accumulating `index_put` keeps only the index but sums in a thread-dependent order on CPU
    (results then vary from run to run with more than one thread). Same values and gradients as
    `index_add`: the gradient of `base` is the incoming one, that of `rows` its rows at `index`.
    """
    return _IndexAddRows.apply(base, index, rows)


class _IndexAddRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, base: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        return base.index_add(0, index, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, torch.Tensor | None]:
        (index,) = ctx.saved_tensors
        grad_rows = grad.index_select(0, index) if ctx.needs_input_grad[2] else None
        return grad if ctx.needs_input_grad[0] else None, None, grad_rows


def linearize_coords(coords: torch.Tensor, *, resolution: int | Sequence[int]) -> torch.Tensor:
    """(N, 4) integer [b, i, j, k] -> (N,) int64 keys ((b D + i) H + j) W + k: each site's row in the
    flattened (B, D, H, W) grid. `resolution`: R for an R^3 grid, or (D, H, W)."""
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must be (N, 4) [b, i, j, k]; got {tuple(coords.shape)}")
    d, h, w = _grid_shape(resolution)
    c = coords.to(torch.int64)
    return ((c[:, 0] * d + c[:, 1]) * h + c[:, 2]) * w + c[:, 3]


def delinearize_keys(keys: torch.Tensor, *, resolution: int | Sequence[int]) -> torch.Tensor:
    """(N,) int64 keys -> (N, 4) int32 [b, i, j, k]; the inverse of `linearize_coords` (same `resolution`)."""
    d, h, w = _grid_shape(resolution)
    k = keys % w
    rest = keys // w
    j = rest % h
    rest = rest // h
    i = rest % d
    b = rest // d
    return torch.stack((b, i, j, k), dim=1).to(torch.int32)


def _grid_shape(resolution: int | Sequence[int]) -> tuple[int, int, int]:
    if not isinstance(resolution, Sequence):
        return int(resolution), int(resolution), int(resolution)
    d, h, w = (int(v) for v in resolution)
    return d, h, w


def voxel_centers(
    coords: torch.Tensor,
    *,
    resolution: int,
    lo: float = -0.5,
    hi: float = 0.5,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(V, 4) [b, i, j, k] -> (V, 3) centres `lo + (ijk + 0.5) * voxel_size` (x, y, z)."""
    _check_grid(resolution, lo, hi)
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must be (V, 4) [b, i, j, k]; got {tuple(coords.shape)}")
    size = (hi - lo) / resolution
    return lo + (coords[:, 1:].to(dtype) + 0.5) * size


def points_from_offsets(
    coords: torch.Tensor,
    offsets: torch.Tensor,
    *,
    resolution: int,
    lo: float = -0.5,
    hi: float = 0.5,
) -> torch.Tensor:
    """Points of the point head: `centre + offset * voxel_size`.

    Args:
        coords: (V, 4) [b, i, j, k] voxel coords.
        offsets: (V, K, 3) offsets in units of voxel size (0 = the voxel centre, +-0.5 = its faces).

    Returns:
        (V, K, 3) points in the frame of the grid, dtype of `offsets`; differentiable w.r.t. offsets.
        `packed_to_padded(points.reshape(-1, 3), coords[:, 0].repeat_interleave(K), B)` gives the
        (B, V_max * K, 3) padded batch + lengths that Chamfer takes.
    """
    if offsets.ndim != 3 or offsets.shape[0] != coords.shape[0] or offsets.shape[2] != 3:
        raise ValueError(
            f"offsets must be ({coords.shape[0]}, K, 3) for {coords.shape[0]} voxels; got {tuple(offsets.shape)}"
        )
    centers = voxel_centers(coords, resolution=resolution, lo=lo, hi=hi, dtype=offsets.dtype)
    return centers[:, None, :] + offsets * ((hi - lo) / resolution)


def packed_to_padded(
    values: torch.Tensor, batch_index: torch.Tensor, batch_size: int, *, pad_value: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows tagged with their batch element -> a padded batch, keeping each element's row order.

    Args:
        values: (N, D) rows, e.g. points.
        batch_index: (N,) int batch element of each row, in [0, batch_size).
        batch_size: B.

    Returns:
        padded (B, L, D) with L = the largest element's row count (pad_value elsewhere), and
        lengths (B,) int64. Differentiable w.r.t. `values`.
    """
    if values.ndim != 2 or batch_index.shape != (values.shape[0],):
        raise ValueError(
            f"expected values (N, D) and batch_index (N,); got {tuple(values.shape)}, {tuple(batch_index.shape)}"
        )
    b = batch_index.to(torch.int64)
    if b.numel() and (b.min() < 0 or b.max() >= batch_size):
        raise ValueError(f"batch_index must lie in [0, {batch_size}); got [{b.min().item()}, {b.max().item()}]")
    lengths = torch.bincount(b, minlength=batch_size)
    starts = torch.cumsum(lengths, 0) - lengths
    width = int(lengths.max().item()) if batch_size else 0
    rank = torch.arange(b.numel(), device=b.device)
    if bool((b[1:] >= b[:-1]).all()):  # already grouped by element (e.g. voxels in key order): no sort
        row = b * width + rank - starts[b]
    else:
        order = torch.argsort(b, stable=True)
        b_sorted = b[order]
        row = torch.empty_like(b)
        row[order] = b_sorted * width + rank - starts[b_sorted]
    # each value's row in the flattened (B * L, D) result, written in place: autograd keeps only `row`
    padded = values.new_full((batch_size * width, values.shape[1]), pad_value).index_put_((row,), values)
    return padded.view(batch_size, width, values.shape[1]), lengths


def occupancy(
    points: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    resolution: int,
    lo: float = -0.5,
    hi: float = 0.5,
    allow_outside: bool = False,
) -> torch.Tensor:
    """(V, 4) int32 sorted unique coords of the voxels that contain at least one valid point.

    Raises ValueError if a valid point lies outside [lo, hi]^3, unless `allow_outside` (then such
    points are dropped).
    """
    vox = voxelize(points, None, lengths, resolution=resolution, lo=lo, hi=hi)
    if not allow_outside and (vox.num_outside > 0).any():
        raise ValueError(
            f"{vox.num_outside.tolist()} points per cloud lie outside the grid [{lo}, {hi}]^3 "
            "(normalize the clouds first, or pass allow_outside=True to drop them)"
        )
    return vox.coords


@dataclass(frozen=True)
class OccupancyPyramid:
    """Ground-truth occupancy at several resolutions, finest first.

    levels: tuple of (V_l, 4) int32 sorted unique coords, one per resolution.
    resolutions: the resolutions, strictly decreasing, each dividing the previous one.
    batch_size: B.

    Consistency (by construction): a voxel of level l + 1 is occupied iff one of its children at
    level l, i.e. a voxel with coords // (R_l / R_{l+1}), is occupied.
    """

    levels: tuple[torch.Tensor, ...]
    resolutions: tuple[int, ...]
    batch_size: int

    def dense(self, level: int) -> torch.Tensor:
        """(B, R, R, R) bool occupancy of one level, indexed [b, i, j, k]."""
        return occupancy_to_dense(self.levels[level], batch_size=self.batch_size, resolution=self.resolutions[level])


def occupancy_pyramid(
    points: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    resolutions: Sequence[int],
    lo: float = -0.5,
    hi: float = 0.5,
    allow_outside: bool = False,
) -> OccupancyPyramid:
    """Occupancy at `resolutions` (finest first, e.g. (64, 32, 16, 8)).

    The finest level comes from the points (`occupancy`); every coarser level is derived from the
    finer one by integer division of the coords, so the levels are consistent exactly, never
    up to floating-point disagreements at cell borders.
    """
    res = tuple(int(r) for r in resolutions)
    if not res or any(r < 1 for r in res) or any(a <= b or a % b for a, b in pairwise(res)):
        raise ValueError(
            f"resolutions must be positive, strictly decreasing, each dividing the previous one; got {tuple(resolutions)}"
        )
    levels = [occupancy(points, lengths, resolution=res[0], lo=lo, hi=hi, allow_outside=allow_outside)]
    for fine, coarse in pairwise(res):
        levels.append(downsample_coords(levels[-1], factor=fine // coarse))
    return OccupancyPyramid(levels=tuple(levels), resolutions=res, batch_size=points.shape[0])


def downsample_coords(coords: torch.Tensor, *, factor: int) -> torch.Tensor:
    """(V, 4) [b, i, j, k] -> sorted unique (V', 4) int32 parents [b, i // f, j // f, k // f]."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1; got {factor}")
    parents = coords.to(torch.int64).clone()
    parents[:, 1:] = torch.div(parents[:, 1:], factor, rounding_mode="floor")
    if parents.numel() == 0:
        return parents.to(torch.int32)
    # unique over 1-D keys (torch.unique(dim=0) compares rows one pair at a time on the CPU: ~10x slower);
    # keys sort like the rows, since every coordinate is below `span`
    span = int(parents[:, 1:].max()) + 1
    if int(parents[:, 1:].min()) < 0:
        raise ValueError("coords must be non-negative grid indices")
    return delinearize_keys(torch.unique(linearize_coords(parents, resolution=span), sorted=True), resolution=span)


def occupancy_to_dense(coords: torch.Tensor, *, batch_size: int, resolution: int) -> torch.Tensor:
    """(V, 4) [b, i, j, k] -> (B, R, R, R) bool, True at the given coords."""
    _check_coords_in_grid(coords, resolution=resolution, batch_size=batch_size, name="coords")
    dense = torch.zeros(batch_size, resolution, resolution, resolution, dtype=torch.bool, device=coords.device)
    c = coords.to(torch.int64)
    dense[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] = True
    return dense


def dense_to_occupancy(dense: torch.Tensor) -> torch.Tensor:
    """(B, R, R, R) bool -> (V, 4) int32 sorted coords of the True cells (inverse of `occupancy_to_dense`)."""
    if dense.ndim != 4:
        raise ValueError(f"dense occupancy must be (B, R, R, R); got {tuple(dense.shape)}")
    return torch.nonzero(dense.bool()).to(torch.int32)  # row-major order == lexicographic order


def is_occupied(query: torch.Tensor, target: torch.Tensor, *, resolution: int) -> torch.Tensor:
    """For each query voxel, whether it is in the target set (the BCE target of generative pruning).

    Args:
        query: (Q, 4) [b, i, j, k] voxels at one level (any order, duplicates allowed). Queries
            outside [0, R)^3 (e.g. created by up-sampling past the border) are never occupied.
        target: (T, 4) [b, i, j, k] occupied voxels of the same level, inside [0, R)^3.
        resolution: R of that level.

    Returns:
        (Q,) bool. Vectorized: int64 keys + `torch.isin`.
    """
    _check_coords_in_grid(target, resolution=resolution, batch_size=None, name="target")
    if query.ndim != 2 or query.shape[1] != 4:
        raise ValueError(f"query must be (Q, 4) [b, i, j, k]; got {tuple(query.shape)}")
    in_grid = ((query[:, 1:] >= 0) & (query[:, 1:] < resolution)).all(dim=1) & (query[:, 0] >= 0)
    keys = linearize_coords(torch.where(in_grid[:, None], query, torch.zeros_like(query)), resolution=resolution)
    return in_grid & torch.isin(keys, linearize_coords(target, resolution=resolution))


def _cells(points: torch.Tensor, *, resolution: int, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P, 3) -> cell indices (B, P, 3) int64 (valid where inside) and inside (B, P) bool."""
    p = points.detach()
    inside = ((p >= lo) & (p <= hi)).all(dim=-1)  # False for NaN
    scaled = (p - lo) * (resolution / (hi - lo))
    scaled = torch.where(inside[..., None], scaled, torch.zeros_like(scaled))
    # p == hi lands in cell R - 1 (closed last face); rounding can also push p < hi to R
    cells = torch.floor(scaled).to(torch.int64).clamp_(0, resolution - 1)
    return cells, inside


def _check_grid(resolution: int, lo: float, hi: float) -> None:
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
        raise ValueError(f"resolution must be a positive int; got {resolution!r}")
    if not lo < hi:
        raise ValueError(f"the grid needs lo < hi; got lo={lo}, hi={hi}")


def _check_coords_in_grid(coords: torch.Tensor, *, resolution: int, batch_size: int | None, name: str) -> None:
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"{name} must be (N, 4) [b, i, j, k]; got {tuple(coords.shape)}")
    if coords.shape[0] == 0:
        return
    bad_ijk = (coords[:, 1:] < 0).any() or (coords[:, 1:] >= resolution).any()
    bad_b = (coords[:, 0] < 0).any() or (batch_size is not None and (coords[:, 0] >= batch_size).any())
    if bad_ijk or bad_b:
        raise ValueError(
            f"{name} out of range for resolution {resolution}"
            + (f" and batch size {batch_size}" if batch_size is not None else "")
            + f": min {coords.min(dim=0).values.tolist()}, max {coords.max(dim=0).values.tolist()}"
        )
