"""Chamfer distance with PyTorch3D v0.7.9's exact signature, semantics and errors.

`chamfer_distance(x, y, ...)` returns `(cham_dist, cham_normals)`:

- per point of `x[n]`, the distance to its nearest point of `y[n]` (squared Euclidean for `norm=2`,
  L1 for `norm=1`), and vice versa unless `single_directional`;
- padded points (index >= length) contribute 0; `weights` (N,) scale each cloud's per-point terms;
- `point_reduction`: "mean" (divide by max(length, 1)), "sum", "max" (the largest term of each
  cloud; the two directions are combined with a maximum, i.e. a squared/L1 Hausdorff distance;
  normals are not allowed) or None (per-point terms, a tuple (x->y, y->x) when bidirectional);
- `batch_reduction`: "mean" (divide by N, or by weights.sum() if weights are given), "sum" or None
  (must be None when point_reduction is None);
- `cham_normals`: 1 - |cos| (or 1 - cos if not `abs_cosine`) between each point's normal and its
  nearest neighbour's normal, reduced the same way; None unless both normals are given.

One deliberate deviation: when all weights are zero, PyTorch3D returns zeros of shape (N, N) for
unreduced batches (an upstream broadcasting slip); we return zeros of the shape a non-zero weighting
would give. As upstream, the normals term is then a zero tensor rather than None.

Backends: "kdtree" (CPU), "bruteforce" (any device), "pytorch3d" (PyTorch3D's own function, when
importable) and "auto" (CPU -> kdtree; CUDA -> pytorch3d if importable, else bruteforce).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pointstn.errors import MissingDependencyError
from pointstn.ops.knn import (
    check_finite,
    checked_lengths,
    distances_to_neighbours,
    knn_gather,
    resolve_backend,
    search_neighbours,
)

CHAMFER_BACKENDS = ("auto", "kdtree", "bruteforce", "pytorch3d")

_Term = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def chamfer_distance(
    x,
    y,
    x_lengths: torch.Tensor | None = None,
    y_lengths: torch.Tensor | None = None,
    x_normals: torch.Tensor | None = None,
    y_normals: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    batch_reduction: str | None = "mean",
    point_reduction: str | None = "mean",
    norm: int = 2,
    single_directional: bool = False,
    abs_cosine: bool = True,
    backend: str = "auto",
) -> tuple[_Term, _Term | None]:
    """Chamfer distance between padded point clouds `x` (N, P1, D) and `y` (N, P2, D).

    Args:
        x: (N, P1, D) tensor, or a PyTorch3D `Pointclouds` (only when pytorch3d is importable).
        y: (N, P2, D) tensor, or a PyTorch3D `Pointclouds`.
        x_lengths: (N,) int number of valid points per cloud of `x`; None means P1.
        y_lengths: (N,) int number of valid points per cloud of `y`; None means P2.
        x_normals: (N, P1, D) normals of `x` or None.
        y_normals: (N, P2, D) normals of `y` or None.
        weights: (N,) non-negative per-cloud weights or None.
        batch_reduction: "mean", "sum" or None.
        point_reduction: "mean", "sum", "max" or None.
        norm: 2 (squared Euclidean) or 1 (L1).
        single_directional: only the x -> y term.
        abs_cosine: ignore the sign of normals (1 - |cos|) if True, else 1 - cos.
        backend: "auto", "kdtree", "bruteforce" or "pytorch3d".

    Returns:
        (cham_dist, cham_normals): scalars when a batch reduction is applied, (N,) tensors when
        batch_reduction is None, (N, P1) per-point terms (a tuple with (N, P2) when bidirectional)
        when point_reduction is None. cham_normals is None without both normals.
    """
    _validate_reductions(batch_reduction, point_reduction)
    if not (norm == 1 or norm == 2):
        raise ValueError("Support for 1 or 2 norm.")
    if point_reduction == "max" and (x_normals is not None or y_normals is not None):
        raise ValueError('Normals must be None if point_reduction is "max"')
    if backend not in CHAMFER_BACKENDS:
        raise ValueError(f"unknown chamfer backend {backend!r}; valid choices: {', '.join(CHAMFER_BACKENDS)}")
    x, x_lengths, x_normals = _unpack(x, x_lengths, x_normals, "x")
    y, y_lengths, y_normals = _unpack(y, y_lengths, y_normals, "y")
    N, _P1, D = x.shape
    if y.shape[0] != N or y.shape[2] != D:
        raise ValueError("y does not have the correct shape.")
    if weights is not None:
        if not torch.is_tensor(weights) or weights.ndim == 0 or weights.shape[0] != N or weights.numel() != N:
            raise ValueError("weights must be of shape (N,).")
        if not bool((weights >= 0).all()):
            raise ValueError("weights cannot be negative.")
    options = {
        "batch_reduction": batch_reduction,
        "point_reduction": point_reduction,
        "norm": norm,
        "single_directional": single_directional,
        "abs_cosine": abs_cosine,
    }
    if backend == "pytorch3d" or (backend == "auto" and x.device.type == "cuda" and _pytorch3d_loss() is not None):
        return _pytorch3d_chamfer(x, y, x_lengths, y_lengths, x_normals, y_normals, weights, **options)
    search_backend = resolve_backend(backend, x.device)
    check_finite(x, x_lengths, "x")
    check_finite(y, y_lengths, "y")
    pairs = [(x, y, x_lengths, y_lengths, x_normals, y_normals)]
    if not single_directional:
        pairs.append((y, x, y_lengths, x_lengths, y_normals, x_normals))
    if weights is not None and float(weights.detach().sum()) == 0.0:
        directions = [_zero_terms(pair[0], weights, point_reduction) for pair in pairs]
    else:
        found = search_neighbours(
            x, y, x_lengths, y_lengths, K=1, norm=norm, backend=search_backend, both_directions=len(pairs) == 2
        )
        directions = [
            _single_direction(
                *pair, *nn, weights=weights, point_reduction=point_reduction, norm=norm, abs_cosine=abs_cosine
            )
            for pair, nn in zip(pairs, found)
        ]
    loss, loss_normals = _combine(directions, point_reduction)
    return _batch_reduce(loss, loss_normals, weights, batch_reduction)


def _validate_reductions(batch_reduction: str | None, point_reduction: str | None) -> None:
    if batch_reduction is not None and batch_reduction not in ["mean", "sum"]:
        raise ValueError('batch_reduction must be one of ["mean", "sum"] or None')
    if point_reduction is not None and point_reduction not in ["mean", "sum", "max"]:
        raise ValueError('point_reduction must be one of ["mean", "sum", "max"] or None')
    if point_reduction is None and batch_reduction is not None:
        raise ValueError("Batch reduction must be None if point_reduction is None")


def _unpack(points, lengths, normals, name: str):
    """(points (N, P, D), lengths (N,) int64, normals or None) from a tensor or a Pointclouds."""
    if type(points).__name__ == "Pointclouds" and type(points).__module__.startswith("pytorch3d"):
        return points.points_padded(), points.num_points_per_cloud(), points.normals_padded()
    if not torch.is_tensor(points):
        raise ValueError(
            "The input pointclouds should be either Pointclouds objects or torch.Tensor of shape "
            f"(minibatch, num_points, 3); {name} is a {type(points).__name__}."
        )
    if points.ndim != 3:
        raise ValueError(f"Expected points to be of shape (N, P, D); {name} has shape {tuple(points.shape)}")
    if not points.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating point tensor, got {points.dtype}")
    lengths = checked_lengths(lengths, points, f"{name}_lengths")
    if normals is not None:
        if normals.ndim != 3:
            raise ValueError("Expected normals to be of shape (N, P, 3")
        if normals.shape != points.shape:
            raise ValueError(f"{name}_normals has shape {tuple(normals.shape)}, expected {tuple(points.shape)}")
    return points, lengths, normals


def _single_direction(
    x, y, x_lengths, y_lengths, x_normals, y_normals, idx, valid, *, weights, point_reduction, norm, abs_cosine
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x -> y terms: (N,) reduced or (N, P1) per point, and the normals term or None."""
    N, P1 = x.shape[0], x.shape[1]
    dists, _ = distances_to_neighbours(x, y, idx, valid, norm=norm)
    cham_x = dists[..., 0]  # (N, P1), already 0 at padded points
    if weights is not None:
        cham_x = cham_x * weights.view(N, 1)
    cham_norm_x = None
    if x_normals is not None and y_normals is not None:
        x_mask = torch.arange(P1, device=x.device).view(1, P1) >= x_lengths.view(N, 1)
        heterogeneous = bool(x_mask.any())
        if heterogeneous:
            x_normals = x_normals.masked_fill(x_mask.unsqueeze(-1), 0.0)
        near = knn_gather(y_normals, idx, y_lengths)[..., 0, :]
        cosine = F.cosine_similarity(x_normals, near, dim=2, eps=1e-6)
        cham_norm_x = 1 - (torch.abs(cosine) if abs_cosine else cosine)
        if heterogeneous:
            cham_norm_x = cham_norm_x.masked_fill(x_mask, 0.0)
        if weights is not None:
            cham_norm_x = cham_norm_x * weights.view(N, 1)
    if point_reduction == "max":
        return cham_x.max(1).values, None
    if point_reduction is not None:
        cham_x = cham_x.sum(1)
        cham_norm_x = cham_norm_x.sum(1) if cham_norm_x is not None else None
        if point_reduction == "mean":
            count = x_lengths.clamp(min=1)
            cham_x = cham_x / count
            cham_norm_x = cham_norm_x / count if cham_norm_x is not None else None
    return cham_x, cham_norm_x


def _zero_terms(x: torch.Tensor, weights: torch.Tensor, point_reduction) -> tuple[torch.Tensor, torch.Tensor]:
    """All-zero-weights result of one direction, kept on the autograd graph like upstream's."""
    N = x.shape[0]
    if point_reduction is None:
        zero = x.sum(2) * weights.view(N, 1) * 0.0
    else:
        zero = x.sum((1, 2)) * weights.view(N) * 0.0
    return zero, zero.clone()


def _combine(directions, point_reduction):
    if len(directions) == 1:
        return directions[0]
    (cham_x, cham_norm_x), (cham_y, cham_norm_y) = directions
    if point_reduction == "max":
        return torch.maximum(cham_x, cham_y), None
    if point_reduction is not None:
        return cham_x + cham_y, (cham_norm_x + cham_norm_y) if cham_norm_x is not None else None
    return (cham_x, cham_y), ((cham_norm_x, cham_norm_y) if cham_norm_x is not None else None)


def _batch_reduce(loss, loss_normals, weights, batch_reduction):
    if batch_reduction is None:
        return loss, loss_normals
    N = loss.shape[0]
    loss = loss.sum()
    loss_normals = loss_normals.sum() if loss_normals is not None else None
    if batch_reduction == "mean":
        if weights is None:
            div = max(N, 1)
        elif float(weights.detach().sum()) == 0.0:
            div = 1
        else:
            div = weights.sum()
        loss = loss / div
        loss_normals = loss_normals / div if loss_normals is not None else None
    return loss, loss_normals


def _pytorch3d_loss():
    try:
        from pytorch3d.loss import chamfer_distance as p3d_chamfer_distance
    except ImportError:
        return None
    return p3d_chamfer_distance


def _pytorch3d_chamfer(x, y, x_lengths, y_lengths, x_normals, y_normals, weights, **options):
    p3d_chamfer_distance = _pytorch3d_loss()
    if p3d_chamfer_distance is None:
        raise MissingDependencyError(
            "pytorch3d",
            "chamfer_distance(backend='pytorch3d')",
            "see https://github.com/facebookresearch/pytorch3d/blob/main/INSTALL.md",
        )
    return p3d_chamfer_distance(
        x,
        y,
        x_lengths=x_lengths,
        y_lengths=y_lengths,
        x_normals=x_normals,
        y_normals=y_normals,
        weights=weights,
        **options,
    )


__all__ = ["CHAMFER_BACKENDS", "chamfer_distance"]
