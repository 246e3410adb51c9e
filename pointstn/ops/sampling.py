"""Resampling padded point clouds to a fixed count K: farthest-point and random.

Both return a `PointSample`. Conventions follow PyTorch3D's `sample_farthest_points`: slots past a
cloud's own sample count hold index -1 and zero coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pointstn.ops.knn import checked_lengths


@dataclass(frozen=True)
class PointSample:
    """K points chosen from each cloud of a padded batch.

    points: (B, K, D) the chosen points (zeros in unused slots).
    idx: (B, K) int64 indices into the input clouds (-1 in unused slots).
    lengths: (B,) int64 number of used slots per cloud.
    """

    points: torch.Tensor
    idx: torch.Tensor
    lengths: torch.Tensor


def farthest_point_sample(
    points: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    K: int,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> PointSample:
    """Farthest point sampling (on CPU one cloud at a time in numpy, elsewhere one torch loop over K).

    Starts at point 0 (or a uniformly random valid point if `random_start`), then repeatedly takes
    the point with the largest squared Euclidean distance to the chosen set; ties go to the smaller
    index. A cloud with fewer than K valid points yields all of its points (lengths = its length).

    Args:
        points: (B, P, D) padded clouds.
        lengths: (B,) valid points per cloud, or None for all P.
        K: number of points to choose per cloud (>= 1).
        random_start: start from a random valid point instead of point 0.
        generator: torch generator for the random start.

    Returns:
        PointSample with points (B, K, D), idx (B, K) and lengths min(lengths, K).
    """
    _check(points, K)
    lengths = checked_lengths(lengths, points, "lengths")
    B, P, _D = points.shape
    device = points.device
    pts = points.detach()
    starts = torch.zeros(B, dtype=torch.int64, device=device)
    if random_start:
        u = torch.rand(B, generator=generator, dtype=torch.float64).to(device)
        starts = (u * lengths.clamp(min=1)).long().clamp(max=P - 1) if P > 0 else starts
    if device.type == "cpu" and pts.dtype in (torch.float32, torch.float64):
        idx = _fps_indices_numpy(pts.numpy(), lengths.tolist(), starts.tolist(), K)
    else:
        idx = _fps_indices_torch(pts, lengths, starts, K)
    return _gather(points, idx, lengths.clamp(max=K))


def _fps_indices_torch(pts: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor, K: int) -> torch.Tensor:
    """(B, K) FPS indices, vectorized over the batch (one loop over K; any device and dtype)."""
    B, P, _D = pts.shape
    device = pts.device
    valid = torch.arange(P, device=device).view(1, P) < lengths.view(B, 1)
    # Chosen and padded points must never win: chosen ones reach distance 0, padding is held at -1.
    nearest = torch.where(valid, torch.full((B, P), float("inf"), dtype=pts.dtype, device=device), -1.0)
    idx = torch.zeros((B, K), dtype=torch.int64, device=device)
    idx[:, 0] = starts
    rows = torch.arange(B, device=device)
    for k in range(1, K):
        last = pts[rows, idx[:, k - 1]]  # (B, D)
        diff = pts - last.unsqueeze(1)
        nearest = torch.minimum(nearest, torch.where(valid, (diff * diff).sum(-1), -1.0))
        idx[:, k] = nearest.argmax(dim=1)  # the first maximum
    return idx


def _fps_indices_numpy(pts: np.ndarray, lengths: list[int], starts: list[int], K: int) -> torch.Tensor:
    """The same indices as `_fps_indices_torch` on CPU, one cloud at a time in numpy: the working set of
    one cloud (its coordinates as D contiguous columns and the nearest distances) stays in cache, and
    in-place numpy ops cost a few microseconds each, where each step of the batched torch loop pays
    torch's per-op overhead and temporaries that span the whole batch. Squared distances are summed
    over the axes in order, as `(diff * diff).sum(-1)` does, so ties and results are identical.
    Only the first min(length, K) slots are filled (`_gather` marks the rest unused)."""
    idx = np.zeros((pts.shape[0], K), dtype=np.int64)
    for b, (length, start) in enumerate(zip(lengths, starts)):
        count = min(length, K)
        if count == 0:
            continue
        columns = [np.ascontiguousarray(pts[b, :length, d]) for d in range(pts.shape[2])]
        nearest = np.full(length, np.inf, dtype=pts.dtype)
        total, term = np.empty(length, dtype=pts.dtype), np.empty(length, dtype=pts.dtype)
        last = idx[b, 0] = start
        for k in range(1, count):
            np.subtract(columns[0], columns[0][last], out=total)
            np.multiply(total, total, out=total)
            for column in columns[1:]:
                np.subtract(column, column[last], out=term)
                np.multiply(term, term, out=term)
                np.add(total, term, out=total)
            np.minimum(nearest, total, out=nearest)
            last = idx[b, k] = int(nearest.argmax())  # the first maximum
    return torch.from_numpy(idx)


def random_resample(
    points: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    K: int,
    generator: torch.Generator | None = None,
) -> PointSample:
    """K random points per cloud: without replacement when the cloud has >= K points; otherwise every
    point once plus K - length points drawn with replacement, in random order.

    Args:
        points: (B, P, D) padded clouds.
        lengths: (B,) valid points per cloud, or None for all P; every cloud needs >= 1 point.
        K: number of points per cloud (>= 1).
        generator: torch generator (CPU) for reproducible draws.

    Returns:
        PointSample with points (B, K, D), idx (B, K) and lengths K for every cloud.
    """
    _check(points, K)
    lengths = checked_lengths(lengths, points, "lengths")
    if bool((lengths == 0).any()):
        empty = torch.nonzero(lengths == 0).flatten().tolist()
        raise ValueError(f"random_resample needs at least one point per cloud; clouds {empty} are empty")
    rows = []
    for n in torch.as_tensor(lengths).tolist():
        if n >= K:
            rows.append(torch.randperm(n, generator=generator)[:K])
        else:
            extra = torch.randint(0, n, (K - n,), generator=generator)
            both = torch.cat([torch.arange(n), extra])
            rows.append(both[torch.randperm(K, generator=generator)])
    idx = torch.stack(rows).to(points.device)
    return _gather(points, idx, torch.full_like(lengths, K))


def _check(points: torch.Tensor, K: int) -> None:
    if not torch.is_tensor(points) or points.ndim != 3:
        raise ValueError(f"points must be a (B, P, D) tensor; got {getattr(points, 'shape', type(points))}")
    if not isinstance(K, int) or K < 1:
        raise ValueError(f"K must be a positive integer; got {K!r}")


def _gather(points: torch.Tensor, idx: torch.Tensor, used: torch.Tensor) -> PointSample:
    """Chosen points (differentiable w.r.t. `points`), with slots >= used set to index -1 / zeros."""
    B, K = idx.shape
    unused = torch.arange(K, device=idx.device).view(1, K) >= used.view(B, 1)
    safe = idx.masked_fill(unused, 0)
    chosen = points.gather(1, safe.unsqueeze(-1).expand(B, K, points.shape[2]))
    chosen = chosen.masked_fill(unused.unsqueeze(-1), 0.0)
    return PointSample(points=chosen, idx=idx.masked_fill(unused, -1), lengths=used)


__all__ = ["PointSample", "farthest_point_sample", "random_resample"]
