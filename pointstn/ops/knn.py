"""K nearest neighbours between batches of padded point clouds, with PyTorch3D v0.7.9 semantics.

`knn_points(p1, p2, ...)` finds, for every point of `p1[n]`, its K nearest points of `p2[n]`:

- `norm=2` ranks by and returns *squared* Euclidean distances, `norm=1` the L1 distance;
- neighbours are ordered by (distance, index): among exactly tied points the smaller index wins,
  as in PyTorch3D's kernel;
- entries that do not exist are padded with index 0 and distance 0: points of `p1[n]` at or past
  `lengths1[n]`, and neighbour slots `k >= lengths2[n]`;
- distances are differentiable w.r.t. `p1` and `p2`; the gradient equals PyTorch3D's
  (`2 * (p1 - p2_nn)` for norm 2, `sign(p1 - p2_nn)` with sign(0) = -1 for norm 1).

The neighbour *indices* come from a non-differentiable search (`pointstn.ops.nn_search`: a k-d tree
over the whole batch on CPU, or chunked brute force); the distances are then recomputed with autograd
from the gathered points, so the backward pass is a plain gather/scatter.
"""

from __future__ import annotations

from collections import namedtuple

import torch

from pointstn.ops.nn_search import BACKENDS, resolve_backend, search_neighbours

KNN = namedtuple("KNN", ["dists", "idx", "knn"])
KNN.__doc__ = """Result of `knn_points`.

dists: (N, P1, K) distances (squared L2 for norm 2, L1 for norm 1), 0 where padded.
idx: (N, P1, K) int64 indices into `p2`, 0 where padded.
knn: (N, P1, K, D) the neighbours' coordinates (zeros where padded) if `return_nn`, else None.
"""


def knn_points(
    p1: torch.Tensor,
    p2: torch.Tensor,
    lengths1: torch.Tensor | None = None,
    lengths2: torch.Tensor | None = None,
    norm: int = 2,
    K: int = 1,
    version: int = -1,
    return_nn: bool = False,
    return_sorted: bool = True,
    *,
    backend: str = "auto",
) -> KNN:
    """K nearest neighbours of each point of `p1[n]` among the points of `p2[n]`.

    Args:
        p1: (N, P1, D) padded query clouds.
        p2: (N, P2, D) padded reference clouds.
        lengths1: (N,) int number of valid points of each cloud in `p1`; None means all P1.
        lengths2: (N,) int number of valid points of each cloud in `p2`; None means all P2.
        norm: 2 for squared Euclidean distances, 1 for L1 distances.
        K: number of neighbours (>= 1).
        version: accepted for PyTorch3D compatibility; it selects a CUDA kernel there and is ignored.
        return_nn: also return the neighbours' coordinates (N, P1, K, D).
        return_sorted: accepted for compatibility; neighbours are always sorted by distance.
        backend: "auto" (CPU: "kdtree"; CUDA: "bruteforce"), "kdtree" or "bruteforce".

    Returns:
        KNN(dists (N, P1, K), idx (N, P1, K) int64, knn (N, P1, K, D) or None).
    """
    if not torch.is_tensor(p1) or not torch.is_tensor(p2) or p1.ndim != 3 or p2.ndim != 3:
        raise ValueError("knn_points expects p1 (N, P1, D) and p2 (N, P2, D) tensors")
    if p1.shape[0] != p2.shape[0]:
        raise ValueError("pts1 and pts2 must have the same batch dimension.")
    if p1.shape[2] != p2.shape[2]:
        raise ValueError("pts1 and pts2 must have the same point dimension.")
    if norm not in (1, 2):
        raise ValueError(f"Support for 1 or 2 norm; got norm={norm!r}.")
    if not isinstance(K, int) or K < 1:
        raise ValueError(f"K must be a positive integer; got {K!r}")
    del version, return_sorted  # see docstring
    lengths1 = checked_lengths(lengths1, p1, "lengths1")
    lengths2 = checked_lengths(lengths2, p2, "lengths2")
    idx, valid = search_neighbours(
        p1, p2, lengths1, lengths2, K=K, norm=norm, backend=resolve_backend(backend, p1.device)
    )
    dists, nn = distances_to_neighbours(p1, p2, idx, valid, norm=norm)
    return KNN(dists=dists, idx=idx, knn=nn if return_nn else None)


def checked_lengths(lengths: torch.Tensor | None, points: torch.Tensor, name: str) -> torch.Tensor:
    """(N,) int64 lengths on `points.device`; None means every cloud is full (P points)."""
    N, P = points.shape[0], points.shape[1]
    if lengths is None:
        return torch.full((N,), P, dtype=torch.int64, device=points.device)
    if not torch.is_tensor(lengths) or lengths.ndim != 1 or lengths.shape[0] != N:
        raise ValueError(f"Expected {name} to be of shape (N,) with N={N}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {lengths.dtype}")
    lengths = lengths.to(device=points.device, dtype=torch.int64)
    if N > 0 and (int(lengths.max()) > P or int(lengths.min()) < 0):
        raise ValueError(f"A length value was too long or negative: {name} must lie in [0, {P}]")
    return lengths


def distances_to_neighbours(
    p1: torch.Tensor, p2: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, *, norm: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable distances (N, P1, K) and neighbour coordinates (N, P1, K, D), zero where invalid.

    `idx` (N, P1, K) indexes `p2`; `valid` (N, P1, K) marks existing entries.
    """
    N, P1, K = idx.shape
    P2, D = p2.shape[1], p2.shape[2]
    offsets = torch.arange(N, device=idx.device).view(N, 1, 1) * P2
    flat = (idx + offsets).reshape(-1)
    nn = p2.reshape(N * P2, D).index_select(0, flat).view(N, P1, K, D)
    diff = p1.unsqueeze(2) - nn
    if norm == 2:
        dists = (diff * diff).sum(-1)
    else:
        # |d| with PyTorch3D's gradient convention sign(0) = -1; multiplying by +-1 is exact.
        sign = torch.where(diff.detach() > 0, 1.0, -1.0).to(diff.dtype)
        dists = (diff * sign).sum(-1)
    if not bool(valid.all()):
        dists = torch.where(valid, dists, dists.new_zeros(()))
        nn = torch.where(valid.unsqueeze(-1), nn, nn.new_zeros(()))
    return dists, nn


def knn_gather(x: torch.Tensor, idx: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Gather features of neighbours, as PyTorch3D's `knn_gather`.

    Args:
        x: (N, M, U) features.
        idx: (N, L, K) int64 indices into `x`.
        lengths: (N,) number of valid entries of each `x[n]`; slots `k >= lengths[n]` become zeros.

    Returns:
        (N, L, K, U) gathered features, differentiable w.r.t. `x`.
    """
    N, M, U = x.shape
    _N, L, K = idx.shape
    if N != _N:
        raise ValueError("x and idx must have same batch dimension.")
    offsets = torch.arange(N, device=idx.device).view(N, 1, 1) * M
    out = x.reshape(N * M, U).index_select(0, (idx + offsets).reshape(-1)).view(N, L, K, U)
    if lengths is not None and bool((lengths < K).any()):
        missing = lengths.view(N, 1) <= torch.arange(K, device=x.device).view(1, K)
        out = out.masked_fill(missing.view(N, 1, K, 1), 0.0)
    return out


__all__ = ["BACKENDS", "KNN", "knn_gather", "knn_points"]
