"""The slow, obviously-correct dense float64 reference for tests/ops/test_spconv_compat.py.

A sparse layer is checked by scattering its input sites into a (B, C, D, H, W) grid, running
torch.nn.functional.conv3d / conv_transpose3d with the weight permuted from spconv's
(C_out, kD, kH, kW, C_in) layout, and reading the result at the layer's output sites. The expected
active-site sets come from the same dense convolutions applied to an occupancy grid with a kernel of ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LayerCase:
    """One layer configuration; `kind` is 'subm', 'conv', 'transpose' or 'inverse' (of a conv k, s, p)."""

    kind: str
    kernel: int
    stride: int = 1
    padding: int = 0

    @property
    def name(self) -> str:
        return f"{self.kind}-k{self.kernel}s{self.stride}p{self.padding}"


LAYER_CASES = [
    LayerCase("subm", 3),
    LayerCase("conv", 3, 2, 1),
    LayerCase("conv", 3, 1, 1),
    LayerCase("conv", 2, 2, 0),
    LayerCase("transpose", 2, 2, 0),
    LayerCase("transpose", 3, 2, 1),
    LayerCase("inverse", 3, 2, 1),
    LayerCase("inverse", 2, 2, 0),
]


def scatter_dense(coords: torch.Tensor, features: torch.Tensor, batch_size: int, shape) -> torch.Tensor:
    """(N, 4) coords + (N, C) features -> (B, C, D, H, W), zeros at inactive sites."""
    dense = features.new_zeros((batch_size, features.shape[1], *shape))
    c = coords.long()
    dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = features
    return dense


def gather_sites(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) read at (N, 4) coords -> (N, C)."""
    c = coords.long()
    return dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


def dense_layer(case: LayerCase, dense_in, weight, bias, output_padding=(0, 0, 0)) -> torch.Tensor:
    """The dense convolution a sparse layer must equal at its active sites."""
    conv_weight = weight.permute(0, 4, 1, 2, 3)  # (C_out, C_in, kD, kH, kW)
    transpose_weight = weight.permute(4, 0, 1, 2, 3)  # (C_in, C_out, kD, kH, kW)
    if case.kind == "subm":
        out = F.conv3d(dense_in, conv_weight, padding=case.kernel // 2)
    elif case.kind == "conv":
        out = F.conv3d(dense_in, conv_weight, stride=case.stride, padding=case.padding)
    elif case.kind == "transpose":
        out = F.conv_transpose3d(dense_in, transpose_weight, stride=case.stride, padding=case.padding)
    else:
        out = F.conv_transpose3d(
            dense_in,
            transpose_weight,
            stride=case.stride,
            padding=case.padding,
            output_padding=output_padding,
        )
    return out + bias.view(1, -1, 1, 1, 1)


def site_rows(coords: torch.Tensor, shape) -> torch.Tensor:
    """int64 key of each (N, 4) coords row on a grid of `shape`, in row order."""
    c = coords.long()
    return ((c[:, 0] * shape[0] + c[:, 1]) * shape[1] + c[:, 2]) * shape[2] + c[:, 3]


def site_keys(coords: torch.Tensor, shape) -> torch.Tensor:
    """Sorted int64 keys of (N, 4) coords on a grid of `shape`: equal keys <=> equal site sets."""
    return torch.sort(site_rows(coords, shape)).values


def occupied_sites(case: LayerCase, coords: torch.Tensor, batch_size: int, shape) -> torch.Tensor:
    """Output sites of a strided/transposed conv: outputs whose kernel window meets an input site."""
    occupancy = scatter_dense(coords, torch.ones(coords.shape[0], 1, dtype=torch.float64), batch_size, shape)
    ones = torch.ones(1, 1, case.kernel, case.kernel, case.kernel, dtype=torch.float64)
    if case.kind == "conv":
        hits = F.conv3d(occupancy, ones, stride=case.stride, padding=case.padding)
    else:
        hits = F.conv_transpose3d(occupancy, ones, stride=case.stride, padding=case.padding)
    return hits[:, 0].gt(0.5).nonzero().int()


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-300)).item()


def expected_out_shape(case: LayerCase, shape):
    k, s, p = case.kernel, case.stride, case.padding
    if case.kind == "conv":
        return tuple((r + 2 * p - k) // s + 1 for r in shape)
    if case.kind == "transpose":
        return tuple((r - 1) * s - 2 * p + k for r in shape)
    return tuple(shape)
