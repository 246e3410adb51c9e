"""ChannelNorm and the fused ChannelNormReLU (pointstn.models.channel_norm).

ChannelNormReLU must be relu(ChannelNorm(x)) bit for bit, values and gradients, on (N, C) sites and
(B, C, D, H, W) grids, inside a RecomputeScope (its fused, recomputing path) and outside; match a
float64 reference written from the formula; keep the parameters (and so the checkpoint keys) of
ChannelNorm; and, inside a RecomputeScope only, let the next layer keep a recomputed copy instead of
its output."""

from __future__ import annotations

import pytest
import torch

from pointstn.models.channel_norm import ChannelNorm, ChannelNormReLU
from pointstn.ops.recompute import RecomputeScope

SHAPES = [(300, 16), (2, 8, 3, 4, 5)]


def make_pair(channels: int, seed: int, dtype=torch.float64) -> tuple[ChannelNorm, ChannelNormReLU]:
    gen = torch.Generator().manual_seed(seed)
    plain, fused = ChannelNorm(channels).to(dtype), ChannelNormReLU(channels).to(dtype)
    with torch.no_grad():
        plain.weight.copy_(torch.randn(channels, generator=gen, dtype=dtype))
        plain.bias.copy_(torch.randn(channels, generator=gen, dtype=dtype))
    fused.load_state_dict(plain.state_dict())
    return plain, fused


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """relu of the layer norm over dim 1, from the formula (biased variance)."""
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return torch.relu((x - mean) / torch.sqrt(var + eps) * weight.view(shape) + bias.view(shape))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scoped", [False, True])
def test_fused_equals_norm_then_relu_bit_for_bit(shape, dtype, scoped):
    plain, fused = make_pair(shape[1], seed=len(shape), dtype=dtype)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    grad = torch.randn(shape, generator=gen, dtype=dtype)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1 = torch.relu(plain(x1))
    with RecomputeScope() if scoped else torch.enable_grad():
        y2 = fused(x2)
        out2 = y2 * 3.0  # a later op that saves nothing but is differentiated through
    assert torch.equal(y1, y2)
    (y1 * 3.0).backward(grad)
    out2.backward(grad)
    assert torch.equal(x1.grad, x2.grad)
    assert torch.equal(plain.weight.grad, fused.weight.grad)
    assert torch.equal(plain.bias.grad, fused.bias.grad)


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_float64_reference_values_and_gradients(shape):
    _, fused = make_pair(shape[1], seed=3)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(shape, generator=gen, dtype=torch.float64)
    expected = reference(x, fused.weight, fused.bias, fused.eps)
    want = torch.autograd.grad(expected, (x, fused.weight, fused.bias), grad)
    with RecomputeScope():
        got = fused(x)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for g, w in zip(torch.autograd.grad(got, (x, fused.weight, fused.bias), grad), want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(fused, (x,))


def test_same_parameters_as_channel_norm():
    assert ChannelNormReLU(5).state_dict().keys() == ChannelNorm(5).state_dict().keys()


@pytest.mark.parametrize("scoped", [False, True])
def test_next_layer_keeps_a_recomputed_copy_only_inside_a_scope(scoped):
    _, fused = make_pair(16, seed=1, dtype=torch.float32)
    linear = torch.nn.Linear(16, 4)
    x = torch.randn(50, 16, requires_grad=True)
    with RecomputeScope() if scoped else torch.enable_grad():
        y = fused(x)
        out = linear(y)
    saved = out.grad_fn._saved_mat1  # what autograd kept for the weight gradient (recomputed when replaced)
    assert torch.equal(saved, y)
    shares = saved.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()
    assert shares != scoped
