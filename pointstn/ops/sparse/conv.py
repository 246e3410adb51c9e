"""Sparse 3D convolutions that run forward and backward on CPU and CUDA from the same model code.

Each module owns its parameters in spconv's layout, `weight (C_out, kD, kH, kW, C_in)` and
`bias (C_out,)`, and picks spconv's algorithm from the input's device at every call (Native on CPU,
spconv's default on CUDA). The bias is added outside spconv, because a biased spconv convolution
in eval mode raises on CPU.

Dense equivalents (checked in float64 by tests/ops/test_spconv_compat.py), with
`x = to_dense(input)`, `Wc = weight.permute(0, 4, 1, 2, 3)` (C_out, C_in, kD, kH, kW) and
`Wt = weight.permute(4, 0, 1, 2, 3)` (C_in, C_out, kD, kH, kW); no kernel flip anywhere:

| module | dense equivalent, read at the output's active sites |
| --- | --- |
| SubMConv3d(k) | `conv3d(x, Wc, padding=k // 2) + bias`; output sites = input sites, same order |
| SparseConv3d(k, s, p) | `conv3d(x, Wc, stride=s, padding=p) + bias`; output sites = every site whose receptive field holds an input site |
| SparseConvTranspose3d(k, s, p) | `conv_transpose3d(x, Wt, stride=s, padding=p) + bias`; grid (R - 1) * s - 2p + k (k2 s2: 2R; k3 s2 p1: 2R - 1); output sites = every site some input site reaches |
| SparseInverseConv3d(k, key) | `conv_transpose3d(x, Wt, stride=s, padding=p, output_padding=op) + bias` with the (s, p) of the `SparseConv3d` that cached `key`, `op` making the grid equal its input grid; output sites = that conv's input sites, same order |
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pointstn.ops.sparse.backend import ConvGeometry, conv_engine
from pointstn.ops.sparse.dense_path import dense_convolution, runs_dense

if TYPE_CHECKING:
    from spconv.pytorch import SparseConvTensor

IntOrTriple = int | Sequence[int]


class _SparseConv(nn.Module):
    """Parameters, initialisation and the checked call into spconv shared by the four layers."""

    def __init__(self, geometry: ConvGeometry, bias: bool):
        super().__init__()
        if geometry.in_channels < 1 or geometry.out_channels < 1:
            raise ValueError(
                f"in_channels and out_channels must be positive, got {geometry.in_channels}, "
                f"{geometry.out_channels}"
            )
        if geometry.indice_key is not None and not (
            isinstance(geometry.indice_key, str) and geometry.indice_key
        ):
            raise ValueError(f"indice_key must be a non-empty string or None, got {geometry.indice_key!r}")
        self.geometry = geometry
        self.in_channels = geometry.in_channels
        self.out_channels = geometry.out_channels
        self.weight = nn.Parameter(
            torch.empty(geometry.out_channels, *geometry.kernel_size, geometry.in_channels)
        )
        self.bias = nn.Parameter(torch.empty(geometry.out_channels)) if bias else None
        self.dense_path = False  # run as a dense conv3d on nearly full grids (ops/sparse/dense_path.py)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in +-1/sqrt(C_in * kernel volume), as torch's Conv3d default, for weight and bias."""
        bound = 1.0 / math.sqrt(self.in_channels * math.prod(self.geometry.kernel_size))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: SparseConvTensor) -> SparseConvTensor:
        """Convolve (N, C_in) sites into (N', C_out) sites; see the module docstring for N'."""
        features = input.features
        if features.ndim != 2 or features.shape[1] != self.in_channels:
            raise ValueError(
                f"{self._name()} expects features (N, {self.in_channels}), got {tuple(features.shape)}"
            )
        if features.dtype != self.weight.dtype or features.device != self.weight.device:
            raise ValueError(
                f"{self._name()} has parameters of {self.weight.dtype} on {self.weight.device} but got "
                f"features of {features.dtype} on {features.device}"
            )
        if features.shape[0] == 0:
            raise ValueError(
                f"{self._name()} got a sparse tensor with no active sites (e.g. an unpadded strided conv "
                "missed every site); spconv cannot convolve it"
            )
        if self.dense_path and runs_dense(self.geometry, input):
            output = dense_convolution(input, self.weight, self.geometry)
        else:
            engine = conv_engine(self.geometry, features.device.type)
            self._check_cached_pairs(input, engine)
            output = engine._conv_forward(self.training, input, self.weight, None)
        if self.bias is not None:
            output = output.replace_feature(output.features + self.bias)
        return output

    def _check_cached_pairs(self, input: SparseConvTensor, engine: Any) -> None:
        """Turn spconv's asserts about cached index pairs into errors that say what to change."""
        key = self.geometry.indice_key
        if key is None:
            return
        cached = input.indice_dict.get(key)
        if cached is None:
            if self.geometry.inverse:
                raise ValueError(
                    f"{self._name()}: no index pairs cached under indice_key '{key}'; run the matching "
                    f"SparseConv3d(indice_key='{key}') on this tensor's lineage first (prune() drops cached pairs)"
                )
            return
        if cached.algo != engine.algo:
            raise ValueError(
                f"{self._name()}: index pairs under '{key}' were built with {cached.algo} but this layer "
                f"runs {engine.algo}; all layers sharing a key must see tensors on the same device"
            )
        if self.geometry.inverse:
            self._check_inverse_pairs(input, cached, key)
        elif self.geometry.subm:
            self._check_subm_pairs(input, cached, key)
        else:
            raise ValueError(
                f"{self._name()}: indice_key '{key}' is already cached on its input; give every "
                "strided or transposed convolution its own key"
            )

    def _check_subm_pairs(self, input: SparseConvTensor, cached: Any, key: str) -> None:
        if not cached.is_subm:
            raise ValueError(
                f"{self._name()}: indice_key '{key}' belongs to a strided/transposed convolution; "
                "a SubMConv3d can share keys only with SubMConv3d layers"
            )
        if list(cached.ksize) != list(self.geometry.kernel_size):
            raise ValueError(
                f"{self._name()}: SubMConv3d layers sharing '{key}' need the same kernel size, "
                f"got {self.geometry.kernel_size} and cached {tuple(cached.ksize)}"
            )
        if not _same_sites(cached.indices, input.indices) or list(cached.spatial_shape) != list(
            input.spatial_shape
        ):
            raise ValueError(
                f"{self._name()}: the index pairs cached under '{key}' belong to a different site set "
                "(stale pairs); use a new key after the sites change"
            )

    def _check_inverse_pairs(self, input: SparseConvTensor, cached: Any, key: str) -> None:
        if cached.is_subm:
            raise ValueError(
                f"{self._name()}: indice_key '{key}' belongs to a SubMConv3d; an inverse convolution "
                "must refer to a SparseConv3d"
            )
        if list(cached.ksize) != list(self.geometry.kernel_size):
            raise ValueError(
                f"{self._name()}: kernel size {self.geometry.kernel_size} differs from the "
                f"{tuple(cached.ksize)} of the convolution that cached '{key}'"
            )
        if not _same_sites(cached.out_indices, input.indices) or list(cached.out_spatial_shape) != list(
            input.spatial_shape
        ):
            raise ValueError(
                f"{self._name()}: the input's sites are not the output sites of the convolution that "
                f"cached '{key}'; an inverse convolution must get exactly that output (features may change)"
            )

    def _name(self) -> str:
        return type(self).__name__

    def extra_repr(self) -> str:
        g = self.geometry
        text = f"{g.in_channels}, {g.out_channels}, kernel_size={g.kernel_size}"
        if not g.subm and not g.inverse:
            text += f", stride={g.stride}, padding={g.padding}"
        if self.bias is None:
            text += ", bias=False"
        if g.indice_key is not None:
            text += f", indice_key={g.indice_key!r}"
        return text


class SubMConv3d(_SparseConv):
    """Submanifold convolution: output sites are exactly the input sites (same order).

    Dense equivalent: `conv3d(to_dense(x), weight.permute(0, 4, 1, 2, 3), padding=k // 2) + bias`
    read at the input sites. Layers with the same `indice_key` share index pairs (same site set).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple = 3,
        bias: bool = True,
        indice_key: str | None = None,
    ):
        kernel = _triple("kernel_size", kernel_size, minimum=1)
        if any(v % 2 == 0 for v in kernel):
            raise ValueError(f"SubMConv3d needs an odd kernel_size (centred on each site), got {kernel}")
        geometry = ConvGeometry(
            in_channels,
            out_channels,
            kernel,
            (1, 1, 1),
            tuple(v // 2 for v in kernel),  # type: ignore[arg-type]
            subm=True,
            transposed=False,
            inverse=False,
            indice_key=indice_key,
        )
        super().__init__(geometry, bias)


class SparseConv3d(_SparseConv):
    """Strided sparse convolution (k3 s2 p1 down-samples; k3 s1 p1 dilates the active set by one voxel).

    Output grid: `(R + 2p - k) // s + 1` per axis; output sites: every output site whose receptive
    field contains an input site. Dense equivalent: `conv3d(to_dense(x), weight.permute(0, 4, 1, 2, 3),
    stride=s, padding=p) + bias` read there. With an `indice_key` its index pairs are cached on the
    output for a `SparseInverseConv3d` with the same key and kernel size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        stride: IntOrTriple,
        padding: IntOrTriple = 0,
        bias: bool = True,
        indice_key: str | None = None,
    ):
        geometry = ConvGeometry(
            in_channels,
            out_channels,
            _triple("kernel_size", kernel_size, minimum=1),
            _triple("stride", stride, minimum=1),
            _triple("padding", padding, minimum=0),
            subm=False,
            transposed=False,
            inverse=False,
            indice_key=indice_key,
        )
        super().__init__(geometry, bias)


class SparseInverseConv3d(_SparseConv):
    """Returns to the input sites of the `SparseConv3d` that cached `indice_key` (same sites, same order).

    Dense equivalent: `conv_transpose3d(to_dense(x), weight.permute(4, 0, 1, 2, 3), stride=s,
    padding=p, output_padding=op) + bias` with that convolution's (s, p) and `op` chosen so the
    grid equals its input grid, read at its input sites. `kernel_size` must equal its kernel size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        indice_key: str,
        bias: bool = True,
    ):
        if indice_key is None:
            raise ValueError("SparseInverseConv3d needs the indice_key of the SparseConv3d it inverts")
        geometry = ConvGeometry(
            in_channels,
            out_channels,
            _triple("kernel_size", kernel_size, minimum=1),
            (1, 1, 1),
            (0, 0, 0),
            subm=False,
            transposed=False,
            inverse=True,
            indice_key=indice_key,
        )
        super().__init__(geometry, bias)


class SparseConvTranspose3d(_SparseConv):
    """Generative up-sampling: every input site spreads to the output sites its kernel reaches.

    Output grid: `(R - 1) * s - 2p + k` per axis (k2 s2: 2R; k3 s2 p1: 2R - 1; there is no
    output_padding). Dense equivalent: `conv_transpose3d(to_dense(x), weight.permute(4, 0, 1, 2, 3),
    stride=s, padding=p) + bias` read at the output sites.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        stride: IntOrTriple,
        padding: IntOrTriple = 0,
        bias: bool = True,
        indice_key: str | None = None,
    ):
        geometry = ConvGeometry(
            in_channels,
            out_channels,
            _triple("kernel_size", kernel_size, minimum=1),
            _triple("stride", stride, minimum=1),
            _triple("padding", padding, minimum=0),
            subm=False,
            transposed=True,
            inverse=False,
            indice_key=indice_key,
        )
        super().__init__(geometry, bias)


def set_dense_path(module: nn.Module, enabled: bool) -> None:
    """Let every sparse convolution in `module` run as a dense conv3d when its grid is nearly full
    (`pointstn.ops.sparse.dense_path`: same result, faster on CPU), or never (`enabled=False`)."""
    for layer in module.modules():
        if isinstance(layer, _SparseConv):
            layer.dense_path = bool(enabled)


def _triple(name: str, value: IntOrTriple, *, minimum: int) -> tuple[int, int, int]:
    values = (value, value, value) if isinstance(value, int) else tuple(value)
    if len(values) != 3 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values
    ):
        raise ValueError(f"{name} must be an int or three ints, each >= {minimum}, got {value!r}")
    return values  # type: ignore[return-value]


def _same_sites(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and bool(torch.equal(a, b)))
