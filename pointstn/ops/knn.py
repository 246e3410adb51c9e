"""K nearest neighbours between batches of padded point clouds, with PyTorch3D v0.7.9 semantics.

`knn_points(p1, p2, ...)` finds, for every point of `p1[n]`, its K nearest points of `p2[n]`:

- `norm=2` ranks by and returns *squared* Euclidean distances, `norm=1` the L1 distance;
- neighbours are ordered by (distance, index): among exactly tied points the smaller index wins,
  as in PyTorch3D's kernel;
- entries that do not exist are padded with index 0 and distance 0: points of `p1[n]` at or past
  `lengths1[n]`, and neighbour slots `k >= lengths2[n]`;
- distances are differentiable w.r.t. `p1` and `p2`; the gradient equals PyTorch3D's
  (`2 * (p1 - p2_nn)` for norm 2, `sign(p1 - p2_nn)` with sign(0) = -1 for norm 1).

The neighbour *indices* come from a non-differentiable search: "kdtree" (CPU; one kd-tree over the
whole batch -- `ops.kdtree`: pykdtree for norm 2, scipy's `cKDTree` for norm 1 -- each cloud shifted
along x so that no neighbour crosses clouds; ranks by float64 distances) or "bruteforce" (chunked dense distances in torch, memory-bounded; any device).
Where two candidates differ by less than float32 rounding, the choice may differ from PyTorch3D's
float32 kernel while the values agree to that rounding. The distances are then recomputed with
autograd from the gathered original (unshifted) points in the input dtype, exactly as PyTorch3D
computes them, so the backward pass is a plain gather/scatter.
"""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from pointstn.ops.kdtree import NeighbourTree, build_tree

BACKENDS = ("auto", "kdtree", "bruteforce")
_BRUTEFORCE_CHUNK_BYTES = 4 * 2**20

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
    check_finite(p1, lengths1, "p1")
    check_finite(p2, lengths2, "p2")
    [(idx, valid)] = search_neighbours(
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


def check_finite(points: torch.Tensor, lengths: torch.Tensor, name: str) -> None:
    """Raise ValueError if a valid point of `points` (N, P, D) holds NaN or inf (padding is ignored)."""
    # numpy on CPU: a torch op here would wake torch's OpenMP pool, whose spinning threads then
    # compete with the tree queries that follow.
    cpu_numpy = points.device.type == "cpu" and points.dtype in (torch.float32, torch.float64)
    if cpu_numpy and np.isfinite(points.detach().numpy()).all():
        return
    finite = torch.isfinite(points.detach()).all(-1)
    if bool(finite.all()):
        return
    P = points.shape[1]
    bad = ~finite & (torch.arange(P, device=points.device).view(1, P) < lengths.view(-1, 1))
    if bool(bad.any()):
        n, i = (int(v) for v in bad.nonzero()[0])
        kind = "NaN" if bool(torch.isnan(points[n, i]).any()) else "inf"
        raise ValueError(f"{name} contains {kind} values ({int(bad.sum())} bad points; first: cloud {n}, point {i})")


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
    all_valid = bool(valid.all())
    if not all_valid:
        # Zero padded entries *before* the arithmetic: garbage (even NaN) in the padding must not
        # leak into values or gradients (0 * NaN would).
        nn = torch.where(valid.unsqueeze(-1), nn, nn.new_zeros(()))
        p1 = torch.where(valid.any(-1, keepdim=True), p1, p1.new_zeros(()))
    diff = p1.unsqueeze(2) - nn
    if norm == 2:
        dists = (diff * diff).sum(-1)
    else:
        # |d| with PyTorch3D's gradient convention sign(0) = -1; multiplying by +-1 is exact.
        sign = torch.where(diff.detach() > 0, 1.0, -1.0).to(diff.dtype)
        dists = (diff * sign).sum(-1)
    if not all_valid:
        dists = torch.where(valid, dists, dists.new_zeros(()))
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


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete search backend for `backend` on `device` ("auto": CPU -> kdtree, else bruteforce)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown kNN backend {backend!r}; valid choices: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "kdtree" if device.type == "cpu" else "bruteforce"
    if backend == "kdtree" and device.type != "cpu":
        raise ValueError(f"the kdtree backend needs CPU tensors, got device {device}")
    return backend


@torch.no_grad()
def search_neighbours(
    p1: torch.Tensor,
    p2: torch.Tensor,
    lengths1: torch.Tensor,
    lengths2: torch.Tensor,
    *,
    K: int,
    norm: int,
    backend: str,
    both_directions: bool = False,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Nearest-neighbour indices p1 -> p2 (and p2 -> p1 if `both_directions`), without gradients.

    Returns a list of (idx, valid): idx (N, P1, K) int64 indices into p2 (0 where invalid) and the
    mask valid (N, P1, K) of existing entries; then (N, P2, K) for the reverse direction. Ranking is
    by (distance, index) as in PyTorch3D's kernel; see the two backends for how distances are ranked.
    """
    if backend == "kdtree":
        found = _kdtree_search(p1, p2, lengths1, lengths2, K=K, norm=norm, both_directions=both_directions)
    else:
        found = [_bruteforce_search(p1, p2, lengths1, lengths2, K=K, norm=norm)]
        if both_directions:
            found.append(_bruteforce_search(p2, p1, lengths2, lengths1, K=K, norm=norm))
    masks = [_valid_mask(lengths1, lengths2, P=p1.shape[1], K=K)]
    if both_directions:
        masks.append(_valid_mask(lengths2, lengths1, P=p2.shape[1], K=K))
    return [(idx.masked_fill(~valid, 0), valid) for idx, valid in zip(found, masks)]


def _valid_mask(lengths1: torch.Tensor, lengths2: torch.Tensor, *, P: int, K: int) -> torch.Tensor:
    """(N, P, K): point i of cloud n exists (i < lengths1[n]) and has a k-th neighbour (k < lengths2[n])."""
    N, device = lengths1.shape[0], lengths1.device
    rows = torch.arange(P, device=device).view(1, P, 1) < lengths1.view(N, 1, 1)
    return rows & (torch.arange(K, device=device).view(1, 1, K) < lengths2.view(N, 1, 1))


def _bruteforce_search(
    p1: torch.Tensor, p2: torch.Tensor, lengths1: torch.Tensor, lengths2: torch.Tensor, *, K: int, norm: int
) -> torch.Tensor:
    """Chunked dense search: (N, P1, K) indices; about 4 MB (cache-sized) of distances at a time.

    norm 1 uses exact `cdist`; norm 2 uses the expanded form |a|^2 - 2ab + |b|^2 (one batched GEMM
    per chunk; float32 coordinates are first centred per cloud), so the *choice* between two
    neighbours whose squared distances differ by less than that form's rounding may differ from an
    exact search (the returned distances are always recomputed exactly). Exact ties go to the smaller
    index wherever the arithmetic is exact (e.g. float64 dyadic coordinates).
    """
    N, P1, _D = p1.shape
    P2 = p2.shape[1]
    idx = torch.zeros((N, P1, K), dtype=torch.int64, device=p1.device)
    if N == 0 or P1 == 0 or P2 == 0:
        return idx
    rows1 = torch.arange(P1, device=p1.device).view(1, P1, 1) < lengths1.view(N, 1, 1)
    rows2 = torch.arange(P2, device=p1.device).view(1, P2, 1) < lengths2.view(N, 1, 1)
    a = torch.where(rows1, p1.detach(), 0.0)
    b = torch.where(rows2, p2.detach(), 0.0)
    if norm == 2:
        if a.dtype != torch.float64:  # centring shrinks |a|^2 + |b|^2 and so the rounding error
            count = (lengths1 + lengths2).clamp(min=1).view(N, 1, 1).to(a.dtype)
            centre = (a.sum(1, keepdim=True) + b.sum(1, keepdim=True)) / count
            a, b = a - centre, b - centre
        b_sq = (b * b).sum(-1).unsqueeze(1)  # (N, 1, P2)
        b_t = b.transpose(1, 2)
    missing = ~rows2.view(N, 1, P2)
    chunk_rows = max(1, _BRUTEFORCE_CHUNK_BYTES // max(1, N * P2 * a.element_size()))
    keep = min(K, P2)
    for start in range(0, P1, chunk_rows):
        chunk = a[:, start : start + chunk_rows]
        if norm == 2:
            d = torch.baddbmm(b_sq, chunk, b_t, alpha=-2.0) + (chunk * chunk).sum(-1, keepdim=True)
        else:
            d = torch.cdist(chunk, b, p=1.0)
        d = d.masked_fill(missing, float("inf"))
        if keep == 1:
            found = d.argmin(dim=-1, keepdim=True)  # first index among exact ties
        else:
            found = torch.sort(d, dim=-1, stable=True).indices[..., :keep]
        idx[:, start : start + chunk_rows, :keep] = found
    return idx


@dataclass(frozen=True)
class _FlatCloud:
    """The valid points of a padded batch, flattened (numpy): their float64 coordinates (M, D), their
    cloud index (M,) and their index inside the cloud (M,)."""

    points: np.ndarray
    batch: np.ndarray
    local: np.ndarray


def _flat_valid(points: torch.Tensor, lengths: torch.Tensor) -> _FlatCloud:
    """All in numpy, so that torch's OpenMP threads stay asleep while the trees are queried."""
    N, P, D = points.shape
    pts = points.detach()
    pts = (pts if pts.dtype in (torch.float32, torch.float64) else pts.double()).numpy()
    count = lengths.numpy()
    if (count == P).all():
        flat = pts.reshape(N * P, D).astype(np.float64)
        return _FlatCloud(flat, np.repeat(np.arange(N), P), np.tile(np.arange(P), N))
    batch, local = np.nonzero(np.arange(P)[None, :] < count[:, None])
    return _FlatCloud(pts[batch, local].astype(np.float64), batch, local)


def _shift_apart(c1: _FlatCloud, c2: _FlatCloud) -> None:
    """Move cloud b by b * s along axis 0, in place, with s (a power of two) > twice the L1 diameter
    of all points."""
    # D x (largest - smallest coordinate) bounds the L1 diameter; flat reductions are fast in numpy
    # (a per-axis reduction over (M, 3) is not).
    lo = min(float(c1.points.min()), float(c2.points.min()))
    hi = max(float(c1.points.max()), float(c2.points.max()))
    diameter = c1.points.shape[1] * (hi - lo)
    shift = 2.0 ** math.ceil(math.log2(2.0 * diameter + 1.0))
    for cloud in (c1, c2):
        cloud.points[:, 0] += cloud.batch * shift


def _kdtree_search(
    p1: torch.Tensor,
    p2: torch.Tensor,
    lengths1: torch.Tensor,
    lengths2: torch.Tensor,
    *,
    K: int,
    norm: int,
    both_directions: bool,
) -> list[torch.Tensor]:
    """One kd-tree per side over the whole batch (`ops.kdtree.build_tree`: pykdtree for norm 2,
    scipy's cKDTree for norm 1), clouds shifted apart along axis 0.

    Cloud n is shifted by n * s with s (a power of two) larger than twice the L1 diameter of all
    points, so every point of a query's own cloud is strictly nearer than any other cloud's point.
    Neighbours are ranked by the tree's float64 distance (exact up to the ~1e-16 relative rounding
    of the shifted coordinates), exact ties by index. For two directions with a tree that exposes its
    leaf order, each side is queried in the other tree's leaf order (spatially coherent, cache
    friendly). Queries use torch's thread count (tree building is single-threaded).
    """
    c1, c2 = _flat_valid(p1, lengths1), _flat_valid(p2, lengths2)
    sides = [(p1, c1)] + ([(p2, c2)] if both_directions else [])
    if c1.points.shape[0] == 0 or c2.points.shape[0] == 0:
        return [torch.zeros((q.shape[0], q.shape[1], K), dtype=torch.int64) for q, _ in sides]
    _shift_apart(c1, c2)
    s1, s2 = c1.points, c2.points
    workers = max(1, torch.get_num_threads())
    tree2 = build_tree(s2, norm=norm)
    select = partial(_tree_select, K=K, workers=workers)
    if both_directions:
        tree1 = build_tree(s1, norm=norm)
        chosen = [
            select(tree2, c2.local, s1, _query_order(tree1)),
            select(tree1, c1.local, s2, _query_order(tree2)),
        ]
    else:
        chosen = [select(tree2, c2.local, s1, np.arange(s1.shape[0]))]
    out = []
    for (q, qc), sel in zip(sides, chosen):
        N, P = q.shape[0], q.shape[1]
        if sel.shape[0] == N * P:  # full clouds: rows are already in (cloud, point) order
            out.append(torch.from_numpy(sel).view(N, P, K))
            continue
        idx = torch.zeros((N, P, K), dtype=torch.int64)
        idx[torch.from_numpy(qc.batch), torch.from_numpy(qc.local)] = torch.from_numpy(sel)
        out.append(idx)
    return out


def _query_order(tree: NeighbourTree) -> np.ndarray:
    """The rows of the tree's own points in its leaf order when it exposes one, else in input order."""
    return tree.leaf_order if tree.leaf_order is not None else np.arange(tree.n)


def _tree_select(tree: NeighbourTree, ref_local: np.ndarray, queries: np.ndarray, rows: np.ndarray, *, K, workers):
    """(Mq, K) in-cloud indices of the K nearest tree points of each query row, ranked by
    (distance, index). The tree proposes K + 1 candidates; rows whose last candidate ties the K-th
    (exact ties: duplicates, lattices) are re-queried with 4x more candidates until resolved."""
    M2 = tree.n
    chosen = np.zeros((queries.shape[0], K), dtype=np.int64)
    n_cand = min(K + 1, M2)
    while rows.size:
        dist, cand = tree.query(queries[rows], k=n_cand, workers=workers)
        local = ref_local[cand]
        keep = min(K, n_cand)
        if n_cand == K + 1 and K == 1:  # fast path: the tree already sorted by distance
            chosen[rows, 0] = local[:, 0]
        else:
            ranked = np.lexsort((local, dist), axis=-1)
            dist, local = np.take_along_axis(dist, ranked, -1), np.take_along_axis(local, ranked, -1)
            chosen[rows, :keep] = local[:, :keep]
        if n_cand >= M2 or n_cand <= K:
            break
        rows = rows[dist[:, -1] == dist[:, K - 1]]
        n_cand = min(4 * n_cand, M2)
    return chosen


__all__ = ["BACKENDS", "KNN", "knn_gather", "knn_points"]
