"""The decoders' per-voxel norm: a layer norm over each voxel's channels, optionally fused with a ReLU.

`ChannelNorm` normalizes each voxel over its channels: unlike batch norm it does not couple samples,
behaves the same in train and eval mode (so pruning decisions do not shift between them), is
defined for a single active site, and is the identical operation on (N, C) site features and on
(B, C, D, H, W) dense grids.

`ChannelNormReLU` is ChannelNorm followed by ReLU, with the parameters of ChannelNorm (so a module
swap keeps checkpoints loadable). Inside a `pointstn.ops.recompute.RecomputeScope` (a decoder built
with `recompute=True` opens one around its forward pass) it trades time for memory: it keeps only
its input for the backward pass (plus the per-voxel mean and 1/std) and offers its output to the
scope, so the convolution after it does not keep that output either; the output is recomputed in
the backward pass. Autograd then keeps one feature tensor per conv -> norm -> ReLU block instead of
two. Either way, values and gradients are bit for bit those of `F.layer_norm` followed by `relu`
(the same kernels: `native_layer_norm` and its backward, and ReLU's backward mask, `z > 0` for the
pre-activation z).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointstn.ops.recompute import offer, recomputing_now


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
    """relu(ChannelNorm(x)); in a RecomputeScope, autograd keeps one feature tensor instead of two (module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        if not recomputing_now():
            return super().forward(x).relu_()
        channels_last = x if x.ndim == 2 else x.movedim(1, -1)
        mask = _ClippedMask()
        y = _NormReLU.apply(channels_last, self.weight, self.bias, self.eps, mask)
        recompute = _recipe(channels_last, self.weight, self.bias, self.eps, mask)
        if x.ndim == 2:
            offer(y, recompute)
            return y
        y = y.movedim(-1, 1)
        offer(y, lambda: recompute().movedim(-1, 1))
        return y


def _norm_relu(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """relu(layer_norm(x)) over the last dim, with the kernels autograd's unfused path runs."""
    return torch.native_layer_norm(x, (x.shape[-1],), weight, bias, eps)[0].relu_()


class _ClippedMask:
    """Where the output is clipped by the ReLU, as found by the first recomputation of the output.

    Each layer that saved the output recomputes it for its own backward step (and frees it after).
    The first recomputation also keeps this bool mask (a quarter of the output's float32 bytes), so
    `_NormReLU.backward`, which runs after every such layer, needs no further recomputation.
    """

    __slots__ = ("clipped",)

    def __init__(self) -> None:
        self.clipped: Tensor | None = None

    def take(self) -> Tensor | None:
        clipped, self.clipped = self.clipped, None
        return clipped


def _recipe(x: Tensor, weight: Tensor, bias: Tensor, eps: float, mask: _ClippedMask) -> Callable[[], Tensor]:
    version = x._version

    def recompute() -> Tensor:
        if x._version != version:
            raise RuntimeError("ChannelNormReLU's input was modified in place after the forward pass")
        y = _norm_relu(x, weight, bias, eps)
        if mask.clipped is None:
            mask.clipped = y <= 0  # relu(z) <= 0 exactly where z <= 0
        return y

    return recompute


class _NormReLU(torch.autograd.Function):
    """relu(layer_norm(x)) over the last dim; saves x, weight, bias, mean and 1/std, not the output."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float, mask: _ClippedMask) -> Tensor:
        z, mean, rstd = torch.native_layer_norm(x, (x.shape[-1],), weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.eps, ctx.mask = eps, mask
        return z.relu_()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        x, weight, bias, mean, rstd = ctx.saved_tensors
        clipped = ctx.mask.take()
        if clipped is None:  # no layer recomputed the output
            clipped = _norm_relu(x, weight, bias, ctx.eps) <= 0
        grad_z = grad.masked_fill(clipped, 0)  # ReLU's backward (threshold_backward)
        needed = list(ctx.needs_input_grad[:3])
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_layer_norm_backward(
            grad_z, x, (x.shape[-1],), mean, rstd, weight, bias, needed
        )
        return grad_x, grad_weight, grad_bias, None, None
