"""Sparse voxel tensors: building them from coordinates, reading them, and editing their sites.

A sparse tensor here is spconv's `SparseConvTensor`: `N` active sites of a batch of `(D, H, W)`
grids, with coordinates `(N, 4)` int32 `[batch, i, j, k]` (i along D, j along H, k along W) and
features `(N, C)`. Its dense equivalent is `(B, C, D, H, W)` with `dense[b, :, i, j, k] = features[n]`
for every site and zeros elsewhere (see `to_dense`).

A tensor also carries the index pairs (site-to-site maps) that convolutions with an `indice_key`
cached on it; `prune` drops them because they no longer describe the pruned site set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from pointstn.ops.recompute import offer_derived
from pointstn.ops.sparse.backend import spconv_api
from pointstn.ops.voxel import linearize_coords

if TYPE_CHECKING:
    from spconv.pytorch import SparseConvTensor


def make_sparse_tensor(
    *,
    coords: torch.Tensor,
    features: torch.Tensor,
    spatial_shape: Sequence[int],
    batch_size: int,
) -> SparseConvTensor:
    """Build a sparse tensor from active sites, after checking them.

    Args:
        coords: (N, 4) int32 `[batch, i, j, k]`, N >= 1, each site at most once, with
            `0 <= batch < batch_size` and `0 <= (i, j, k) < spatial_shape`.
        features: (N, C) floating point, on the same device as `coords`.
        spatial_shape: `(D, H, W)` grid size.
        batch_size: B, the number of grids (items without sites are allowed).

    Returns:
        The sparse tensor, with no cached index pairs.

    Raises:
        ValueError: naming the first problem found (dtype, shape, device, range, duplicates, or
            no sites at all: spconv cannot run strided/transposed convolutions on zero sites).
    """
    shape = _check_grid(spatial_shape, batch_size)
    if not isinstance(coords, torch.Tensor) or coords.dtype != torch.int32:
        got = coords.dtype if isinstance(coords, torch.Tensor) else type(coords).__name__
        raise ValueError(f"coords must be an int32 tensor (convert with coords.int()), got {got}")
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must have shape (N, 4) [batch, i, j, k], got {tuple(coords.shape)}")
    if coords.shape[0] == 0:
        raise ValueError("coords has no sites; a sparse tensor needs at least one active site")
    if not isinstance(features, torch.Tensor) or not features.is_floating_point():
        got = features.dtype if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"features must be a floating-point tensor, got {got}")
    if features.ndim != 2 or features.shape[0] != coords.shape[0]:
        raise ValueError(
            f"features must have shape (N, C) with N = {coords.shape[0]} (the number of coords), "
            f"got {tuple(features.shape)}"
        )
    if features.device != coords.device:
        raise ValueError(f"coords are on {coords.device} but features are on {features.device}")
    _check_range(coords, shape, batch_size)
    _check_unique(coords, shape)
    # spconv reads the index buffer as if it were contiguous: a transposed view (e.g. the result of
    # mask.nonzero().int()) silently yields wrong sites.
    return spconv_api().tensor_type(features, coords.contiguous(), list(shape), int(batch_size))


def sparse_features(tensor: SparseConvTensor) -> torch.Tensor:
    """The (N, C) features of `tensor`, row n belonging to `sparse_coords(tensor)[n]`."""
    return tensor.features


def sparse_coords(tensor: SparseConvTensor) -> torch.Tensor:
    """The (N, 4) int32 `[batch, i, j, k]` coordinates of `tensor`'s active sites."""
    return tensor.indices


def sparse_spatial_shape(tensor: SparseConvTensor) -> tuple[int, int, int]:
    """The `(D, H, W)` grid size of `tensor`."""
    d, h, w = (int(v) for v in tensor.spatial_shape)
    return d, h, w


def sparse_batch_size(tensor: SparseConvTensor) -> int:
    """The number of grids B in `tensor`."""
    return int(tensor.batch_size)


def replace_features(tensor: SparseConvTensor, features: torch.Tensor) -> SparseConvTensor:
    """`tensor` with new (N, C') features on the same sites; cached index pairs stay valid."""
    n = tensor.indices.shape[0]
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != n:
        got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"replacement features must have shape (N, C) with N = {n}, got {got}")
    return tensor.replace_feature(features)


def map_features(tensor: SparseConvTensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> SparseConvTensor:
    """`tensor` with features `fn(features)`; `fn` maps (N, C) to (N, C'), e.g. `nn.ReLU()`."""
    return replace_features(tensor, fn(tensor.features))


class FeatureWise(nn.Module):
    """Applies a per-row module (e.g. `nn.BatchNorm1d(C)`, `nn.ReLU()`) to a sparse tensor's features.

    Batch norm statistics are taken over all active sites of the batch, as in spconv's own
    `SparseBatchNorm`.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, tensor: SparseConvTensor) -> SparseConvTensor:
        return map_features(tensor, self.module)


def prune(tensor: SparseConvTensor, keep_mask: torch.Tensor) -> SparseConvTensor:
    """The sites of `tensor` where `keep_mask` is True, in their original order.

    Args:
        tensor: N active sites.
        keep_mask: (N,) bool, on the tensor's device, True for at least one site.

    Returns:
        A tensor with `keep_mask.sum()` sites, the same grid, and NO cached index pairs: pairs
        cached by `indice_key` describe the old site set (and every set derived from it), so layers
        after `prune` rebuild theirs. Consequently a `SparseInverseConv3d` cannot return through a
        pruned tensor.
    """
    n = tensor.indices.shape[0]
    if not isinstance(keep_mask, torch.Tensor) or keep_mask.dtype != torch.bool:
        got = keep_mask.dtype if isinstance(keep_mask, torch.Tensor) else type(keep_mask).__name__
        raise ValueError(f"keep_mask must be a bool tensor, got {got}")
    if keep_mask.shape != (n,):
        raise ValueError(f"keep_mask must have shape ({n},), got {tuple(keep_mask.shape)}")
    if keep_mask.device != tensor.indices.device:
        raise ValueError(f"keep_mask is on {keep_mask.device} but the tensor is on {tensor.indices.device}")
    if not bool(keep_mask.any()):
        raise ValueError(
            "prune would remove every site; spconv cannot convolve an empty sparse tensor. "
            "Keep at least one site (e.g. the highest-scoring one of each batch item)."
        )
    features = tensor.features[keep_mask]
    offer_derived(features, tensor.features, lambda full: full[keep_mask])  # ops/recompute.py
    return spconv_api().tensor_type(
        features,
        tensor.indices[keep_mask].contiguous(),
        list(tensor.spatial_shape),
        int(tensor.batch_size),
    )


def to_dense(tensor: SparseConvTensor) -> torch.Tensor:
    """The (B, C, D, H, W) dense equivalent: features at active sites, zeros elsewhere (differentiable)."""
    features = tensor.features
    b, i, j, k = tensor.indices.long().unbind(dim=1)
    d, h, w = sparse_spatial_shape(tensor)
    dense = features.new_zeros((int(tensor.batch_size), d, h, w, features.shape[1]))
    dense = dense.index_put((b, i, j, k), features)
    return dense.permute(0, 4, 1, 2, 3).contiguous()


def _check_grid(spatial_shape: Sequence[int], batch_size: int) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in spatial_shape)
    if len(shape) != 3 or any(v < 1 for v in shape) or any(int(v) != v for v in spatial_shape):
        raise ValueError(f"spatial_shape must be three positive integers (D, H, W), got {spatial_shape}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    return shape  # type: ignore[return-value]


def _check_range(coords: torch.Tensor, shape: tuple[int, int, int], batch_size: int) -> None:
    upper = torch.tensor([batch_size, *shape], dtype=torch.int32, device=coords.device)
    bad = ((coords < 0) | (coords >= upper)).any(dim=1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"coords row {row} = {coords[row].tolist()} is outside batch_size {batch_size} and "
            f"spatial_shape {list(shape)} (need 0 <= batch < {batch_size}, 0 <= [i, j, k] < {list(shape)}); "
            f"{int(bad.sum())} rows are out of range"
        )


def _check_unique(coords: torch.Tensor, shape: tuple[int, int, int]) -> None:
    keys = linearize_coords(coords, resolution=shape)
    unique_keys, counts = torch.unique(keys, return_counts=True)
    if unique_keys.shape[0] != keys.shape[0]:
        duplicated = unique_keys[counts > 1][0]
        rows = (keys == duplicated).nonzero()[:, 0].tolist()
        raise ValueError(
            f"coords has {keys.shape[0] - unique_keys.shape[0]} duplicate sites; e.g. rows {rows} "
            f"are all {coords[rows[0]].tolist()}. Merge duplicates first (e.g. scatter-mean per voxel)"
        )
