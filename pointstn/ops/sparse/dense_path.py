"""Running a grid-preserving sparse convolution as a dense `conv3d` when its sites nearly fill the grid.

On a CPU, spconv's Native algorithm gathers the input rows of every kernel offset, multiplies them by
that offset's weight and scatters the products (27 gather-GEMM-scatters for a 3 x 3 x 3 kernel). When
almost every site of the grid is active -- the decoder's coarsest level is completely full when the
coarse cloud carries a lattice of query points (`model.decoder.lattice`) -- the same sums are one
`conv3d` on the dense grid, which oneDNN runs without the gathers and scatters, faster from a few
thousand sites on (docs/BENCHMARKS.md, "Dense path for full grids": the training step with and without
it). On tiny grids oneDNN's fixed cost wins instead (batch 1 or 2 of an 8^3 grid at 128 channels:
spconv is faster on this machine), hence `MIN_SITES`. Layers take this path only when enabled
(`set_dense_path`; the sparse decoder enables it by `model.decoder.dense_path`).

The result is the same sum (inactive sites are zeros in the dense grid, so they add nothing), up to the
order of floating-point additions; tests/ops/test_sparse_dense_path.py compares values and gradients
with spconv in float64. Which layers may take this path:
- `SubMConv3d`: output sites = input sites, same order (so cached index pairs stay valid);
- `SparseConv3d` with stride 1 and 2 * padding = kernel - 1 (the grid keeps its size) and no
  `indice_key` (an inverse convolution would need spconv's pairs): output sites = every site within
  the kernel of an input site, in (batch, i, j, k) order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from pointstn.ops.sparse.backend import ConvGeometry, spconv_api
from pointstn.ops.voxel import delinearize_keys, linearize_coords

if TYPE_CHECKING:
    from spconv.pytorch import SparseConvTensor

MIN_FRACTION = 0.9  # active sites / grid sites (all B grids) from which the dense conv3d runs
MIN_SITES = 2048  # B * D * H * W below this stays in spconv (oneDNN's fixed cost dominates tiny grids)


def preserves_grid(geometry: ConvGeometry) -> bool:
    """True for the layers this path can run (module docstring): SubM, or stride-1 same-size SparseConv3d."""
    if geometry.subm:
        return True
    return (
        not geometry.transposed
        and not geometry.inverse
        and geometry.indice_key is None
        and all(s == 1 for s in geometry.stride)
        and all(2 * p == k - 1 for k, p in zip(geometry.kernel_size, geometry.padding))
    )


def runs_dense(geometry: ConvGeometry, input: SparseConvTensor) -> bool:
    """Whether `dense_convolution` should run this layer on this input: a grid-preserving layer on a
    nearly full CPU grid of at least `MIN_SITES` sites (the thresholds were measured on CPU only; on
    CUDA spconv's own algorithms run)."""
    if input.features.device.type != "cpu" or not preserves_grid(geometry):
        return False
    grid_sites = int(input.batch_size) * math.prod(int(v) for v in input.spatial_shape)
    return grid_sites >= MIN_SITES and input.indices.shape[0] >= MIN_FRACTION * grid_sites


def dense_convolution(input: SparseConvTensor, weight: torch.Tensor, geometry: ConvGeometry) -> SparseConvTensor:
    """The layer's output computed as `conv3d` on the dense grid (weight in spconv's (C_out, kD, kH, kW,
    C_in) layout; no bias, which the caller adds)."""
    batch = int(input.batch_size)
    d, h, w = (int(v) for v in input.spatial_shape)
    features = input.features
    rows = linearize_coords(input.indices, resolution=(d, h, w))
    grid = features.new_zeros(batch * d * h * w, features.shape[1]).index_copy(0, rows, features)
    # (B, D, H, W, C) viewed as (B, C, D, H, W): channels-last, oneDNN's fastest layout for this conv
    dense_in = grid.view(batch, d, h, w, -1).permute(0, 4, 1, 2, 3)
    padding = tuple(k // 2 for k in geometry.kernel_size)
    dense_out = F.conv3d(dense_in, weight.permute(0, 4, 1, 2, 3), padding=padding)
    out_rows = dense_out.permute(0, 2, 3, 4, 1).reshape(batch * d * h * w, -1)
    if geometry.subm:
        return input.replace_feature(out_rows.index_select(0, rows))
    reached = torch.zeros(batch * d * h * w, dtype=features.dtype, device=features.device)
    reached[rows] = 1.0
    reached = F.max_pool3d(reached.view(batch, 1, d, h, w), geometry.kernel_size, stride=1, padding=padding)
    sites = reached.view(-1).nonzero().squeeze(1)
    coords = delinearize_keys(sites, resolution=(d, h, w))
    return spconv_api().tensor_type(out_rows.index_select(0, sites), coords, [d, h, w], batch)

