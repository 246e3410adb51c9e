"""Slow, obviously-correct float64 references for the nearest-neighbour ops and metrics.

Every function loops over clouds, looks only at the valid points of each cloud, computes every
pairwise distance explicitly, and follows PyTorch3D v0.7.9's conventions literally:

- squared Euclidean distance for norm 2, L1 for norm 1;
- neighbours ranked by (distance, index): the smaller index wins an exact tie;
- padded entries are 0 (index and distance);
- the L1 gradient uses sign(0) = -1 (PyTorch3D's backward kernel); written here as |d| = d * s with
  s = +1 if d > 0 else -1 held constant.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def lengths_or_full(points: torch.Tensor, lengths: torch.Tensor | None) -> list[int]:
    return [points.shape[1]] * points.shape[0] if lengths is None else [int(v) for v in lengths]


def point_distance(a: torch.Tensor, b: torch.Tensor, norm: int) -> torch.Tensor:
    """Distance between a (..., D) and b (..., D): squared L2 or L1 (sign(0) = -1 gradient)."""
    diff = a - b
    if norm == 2:
        return (diff * diff).sum(-1)
    sign = torch.where(diff.detach() > 0, 1.0, -1.0).to(diff.dtype)
    return (diff * sign).sum(-1)


def nearest_indices(p1: torch.Tensor, p2: torch.Tensor, K: int, norm: int) -> np.ndarray:
    """(P1, min(K, P2)) indices of the nearest points of one cloud, ranked by (distance, index)."""
    a = p1.detach().double().numpy()
    b = p2.detach().double().numpy()
    if norm == 2:
        d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    else:
        d = np.abs(a[:, None, :] - b[None, :, :]).sum(-1)
    index = np.broadcast_to(np.arange(b.shape[0]), d.shape)
    order = np.lexsort((index, d), axis=-1)  # last key (d) is primary, index breaks ties
    return order[:, :K]


def knn_reference(p1, p2, lengths1=None, lengths2=None, *, K: int, norm: int):
    """(dists (N, P1, K), idx (N, P1, K), nn (N, P1, K, D)) in p1's dtype, differentiable."""
    N, P1, D = p1.shape
    l1, l2 = lengths_or_full(p1, lengths1), lengths_or_full(p2, lengths2)
    dists = [[p1.new_zeros(()) for _ in range(K)] for _ in range(N * P1)]
    idx = torch.zeros((N, P1, K), dtype=torch.int64)
    nn = [[p1.new_zeros(D) for _ in range(K)] for _ in range(N * P1)]
    for n in range(N):
        if l1[n] == 0 or l2[n] == 0:
            continue
        order = nearest_indices(p1[n, : l1[n]], p2[n, : l2[n]], K, norm)
        for i in range(l1[n]):
            for k, j in enumerate(order[i]):
                idx[n, i, k] = int(j)
                dists[n * P1 + i][k] = point_distance(p1[n, i], p2[n, int(j)], norm)
                nn[n * P1 + i][k] = p2[n, int(j)]
    dists_t = torch.stack([torch.stack(row) for row in dists]).view(N, P1, K)
    nn_t = torch.stack([torch.stack(row) for row in nn]).view(N, P1, K, D)
    return dists_t, idx, nn_t


def one_direction(x, y, lx, ly, xn, yn, weights, *, norm, abs_cosine):
    """Per-point terms of one cloud pair (x -> y): list of distances, list of normal terms or None."""
    if ly == 0:
        terms = [x.new_zeros(()) for _ in range(lx)]
        normal_terms = [x.new_ones(()) for _ in range(lx)] if xn is not None and yn is not None else None
    else:
        order = nearest_indices(x[:lx], y[:ly], 1, norm)[:, 0]
        terms = [point_distance(x[i], y[int(order[i])], norm) for i in range(lx)]
        normal_terms = None
        if xn is not None and yn is not None:
            normal_terms = []
            for i in range(lx):
                cosine = F.cosine_similarity(xn[i], yn[int(order[i])], dim=0, eps=1e-6)
                normal_terms.append(1 - (cosine.abs() if abs_cosine else cosine))
    if weights is not None:
        terms = [t * weights for t in terms]
        normal_terms = [t * weights for t in normal_terms] if normal_terms is not None else None
    return terms, normal_terms


def chamfer_reference(
    x, y, x_lengths=None, y_lengths=None, x_normals=None, y_normals=None, weights=None,
    batch_reduction="mean", point_reduction="mean", norm=2, single_directional=False, abs_cosine=True,
):  # fmt: skip
    """PyTorch3D v0.7.9 `chamfer_distance`, one cloud and one point at a time."""
    N, P1, _ = x.shape
    P2 = y.shape[1]
    lx, ly = lengths_or_full(x, x_lengths), lengths_or_full(y, y_lengths)
    with_normals = x_normals is not None and y_normals is not None
    directions = [(x, y, lx, ly, x_normals, y_normals, P1)]
    if not single_directional:
        directions.append((y, x, ly, lx, y_normals, x_normals, P2))
    results = []  # per direction: (reduced (N,) or per-point (N, P), normals or None)
    for a, b, la, lb, an, bn, P in directions:
        per_cloud, per_cloud_normals = [], []
        for n in range(N):
            w = weights[n] if weights is not None else None
            terms, normal_terms = one_direction(
                a[n], b[n], la[n], lb[n], an[n] if with_normals else None, bn[n] if with_normals else None, w,
                norm=norm, abs_cosine=abs_cosine,
            )  # fmt: skip
            pad = [a.new_zeros(())] * (P - la[n])
            if point_reduction is None:
                per_cloud.append(torch.stack(terms + pad))
                if with_normals:
                    per_cloud_normals.append(torch.stack(normal_terms + pad))
                continue
            padded = torch.stack(terms + pad)
            if point_reduction == "max":
                per_cloud.append(padded.max())
            else:
                total = padded.sum()
                per_cloud.append(total / max(la[n], 1) if point_reduction == "mean" else total)
            if with_normals:
                total = torch.stack(normal_terms + pad).sum()
                per_cloud_normals.append(total / max(la[n], 1) if point_reduction == "mean" else total)
        results.append((torch.stack(per_cloud), torch.stack(per_cloud_normals) if with_normals else None))
    if single_directional:
        loss, loss_normals = results[0]
    elif point_reduction == "max":
        loss, loss_normals = torch.maximum(results[0][0], results[1][0]), None
    elif point_reduction is None:
        loss = (results[0][0], results[1][0])
        loss_normals = (results[0][1], results[1][1]) if with_normals else None
    else:
        loss = results[0][0] + results[1][0]
        loss_normals = results[0][1] + results[1][1] if with_normals else None
    if batch_reduction is None:
        return loss, loss_normals
    loss = loss.sum()
    loss_normals = loss_normals.sum() if loss_normals is not None else None
    if batch_reduction == "mean":
        div = N if weights is None else weights.sum()
        loss = loss / div
        loss_normals = loss_normals / div if loss_normals is not None else None
    return loss, loss_normals


def nearest_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Pa,) unsquared Euclidean distance from each row of a (Pa, D) to its nearest row of b (Pb, D)."""
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min(1)


def farthest_point_reference(points: np.ndarray, K: int, start: int = 0) -> list[int]:
    """Farthest point sampling of one cloud (P, D) by the textbook loop; ties go to the smaller index."""
    chosen = [start]
    nearest = ((points - points[start]) ** 2).sum(-1)
    for _ in range(1, K):
        nxt = int(np.argmax(nearest))  # argmax returns the first maximum
        chosen.append(nxt)
        nearest = np.minimum(nearest, ((points - points[nxt]) ** 2).sum(-1))
    return chosen
