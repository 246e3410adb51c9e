"""Resampling padded point clouds to a fixed count K: farthest-point and random.

Both return a `PointSample`. Conventions follow PyTorch3D's `sample_farthest_points`: slots past a
cloud's own sample count hold index -1 and zero coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """Farthest point sampling, vectorized over the batch (one loop over K).

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
    valid = torch.arange(P, device=device).view(1, P) < lengths.view(B, 1)
    # Chosen and padded points must never win: chosen ones reach distance 0, padding is held at -1.
    nearest = torch.where(valid, torch.full((B, P), float("inf"), dtype=pts.dtype, device=device), -1.0)
    idx = torch.zeros((B, K), dtype=torch.int64, device=device)
    if random_start:
        u = torch.rand(B, generator=generator, dtype=torch.float64).to(device)
        idx[:, 0] = (u * lengths.clamp(min=1)).long().clamp(max=P - 1) if P > 0 else 0
    rows = torch.arange(B, device=device)
    for k in range(1, K):
        last = pts[rows, idx[:, k - 1]]  # (B, D)
        diff = pts - last.unsqueeze(1)
        nearest = torch.minimum(nearest, torch.where(valid, (diff * diff).sum(-1), -1.0))
        idx[:, k] = nearest.argmax(dim=1)  # the first maximum
    return _gather(points, idx, lengths.clamp(max=K))


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
