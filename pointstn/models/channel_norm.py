"""The decoders' per-voxel norm: a layer norm over each voxel's channels, optionally fused with a ReLU.

`ChannelNorm` normalizes each voxel over its channels: unlike batch norm it does not couple samples,
behaves the same in train and eval mode (so pruning decisions do not shift between them), is
defined for a single active site, and is the identical operation on (N, C) site features and on
(B, C, D, H, W) dense grids.

`ChannelNormReLU` is ChannelNorm followed by ReLU, with the parameters of ChannelNorm (so a module
swap keeps checkpoints loadable). It keeps only its input for the backward pass (plus the per-voxel
mean and 1/std) and recomputes the norm there; and it offers its output to the active
`pointstn.ops.recompute.RecomputeScope`, so the convolution after it does not keep that output
either. Unfused, autograd kept both the norm's input and the ReLU's output, i.e. two feature
tensors per block instead of one. Values and gradients are bit for bit those of
`F.layer_norm` followed by `relu` (the same kernels: `native_layer_norm` and its backward, and
ReLU's backward mask, which is `z > 0` for the pre-activation z).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointstn.ops.recompute import offer


class ChannelNorm(nn.Module):
    """Layer norm over the channels of every voxel: dim 1 of (N, C) site features or (B, C, D, H, W) grids."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.channels, self.eps = channels, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 2:
            return F.layer_norm(x, (self.channels,), self.weight, self.bias, self.eps)
        return F.layer_norm(x.movedim(1, -1), (self.channels,), self.weight, self.bias, self.eps).movedim(-1, 1)


class ChannelNormReLU(ChannelNorm):
    """relu(ChannelNorm(x)), keeping one feature tensor for the backward pass instead of two (module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        channels_last = x if x.ndim == 2 else x.movedim(1, -1)
        y = _NormReLU.apply(channels_last, self.weight, self.bias, self.eps)
        if x.ndim != 2:
            y = y.movedim(-1, 1)
        if y.requires_grad:
            offer(y, _recompute_from(x, self.weight, self.bias, self.eps, ndim=x.ndim))
        return y


def _norm_relu(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """relu(layer_norm(x)) over the last dim, with the kernels autograd's unfused path runs."""
    return torch.native_layer_norm(x, (x.shape[-1],), weight, bias, eps)[0].relu_()


def _recompute_from(x: Tensor, weight: Tensor, bias: Tensor, eps: float, *, ndim: int) -> Any:
    version = x._version

    def recompute() -> Tensor:
        if x._version != version:
            raise RuntimeError("ChannelNormReLU's input was modified in place after the forward pass; cannot recompute")
        if ndim == 2:
            return _norm_relu(x, weight, bias, eps)
        return _norm_relu(x.movedim(1, -1), weight, bias, eps).movedim(-1, 1)

    return recompute


class _NormReLU(torch.autograd.Function):
    """relu(layer_norm(x)) over the last dim; saves x, weight, bias, mean and 1/std, not the output."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        z, mean, rstd = torch.native_layer_norm(x, (x.shape[-1],), weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.eps = eps
        return z.relu_()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x, weight, bias, mean, rstd = ctx.saved_tensors
        z = torch.native_layer_norm(x, (x.shape[-1],), weight, bias, ctx.eps)[0]
        clipped = z <= 0
        grad_z = z.copy_(grad).masked_fill_(clipped, 0)  # ReLU's backward (threshold_backward), in z's memory
        mask = list(ctx.needs_input_grad[:3])
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_layer_norm_backward(
            grad_z, x, (x.shape[-1],), mean, rstd, weight, bias, mask
        )
        return grad_x, grad_weight, grad_bias, None
