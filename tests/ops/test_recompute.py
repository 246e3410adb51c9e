"""Selective recomputation (pointstn.ops.recompute): an offered tensor is recomputed, not kept, only
where that is exact, and whole decoders give the same values and gradients with and without it."""

from __future__ import annotations

import pytest
import torch

from pointstn.models.dense_unet import DenseUNetDecoder
from pointstn.models.sparse_unet import SparseUNetDecoder
from pointstn.ops.recompute import RecomputeScope, offer, offer_derived
from tests.ops.test_spconv_compat import num_threads

__all__ = ["num_threads"]  # the fixture, re-used


def kept_by_linear(y: torch.Tensor, linear: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    out = linear(y)
    return out, out.grad_fn._saved_mat1  # unpacking: the recomputed tensor when a recipe was kept


def shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def test_offered_tensor_is_recomputed_and_others_are_kept():
    x = torch.randn(20, 6, requires_grad=True)
    linear = torch.nn.Linear(6, 3)
    calls = []

    def recompute():
        calls.append(1)
        return torch.tanh(x)

    with RecomputeScope():
        y = torch.tanh(x)
        offer(y, recompute)
        _, saved = kept_by_linear(y, linear)
        _, other = kept_by_linear(torch.sin(x), linear)
    assert not shares_storage(saved, y) and torch.equal(saved, y) and calls == [1]
    assert shares_storage(other, other)  # a tensor nobody offered is kept as it is
    _, outside = kept_by_linear(y, linear)  # after the scope: kept as usual
    assert shares_storage(outside, y)


def test_not_replaced_after_in_place_change_or_as_a_different_view():
    x = torch.randn(6, 6)
    linear = torch.nn.Linear(6, 6)
    with RecomputeScope():
        y = torch.relu(x).requires_grad_()
        offer(y, lambda: torch.relu(x))
        z = y.detach()
        z.add_(1.0)  # same storage, new version: the recipe would be stale
        _, after_change = kept_by_linear(y, linear)
        w = torch.relu(x).requires_grad_()
        offer(w, lambda: torch.relu(x))
        _, transposed = kept_by_linear(w.t(), linear)  # another view of the offered storage
    assert shares_storage(after_change, y)
    assert shares_storage(transposed, w)


def test_derived_offer_follows_its_source_and_needs_one():
    x = torch.randn(10, 4)
    rows = torch.tensor([1, 3, 4, 8])
    linear = torch.nn.Linear(4, 2)
    with RecomputeScope():
        y = torch.exp(x).requires_grad_()
        offer(y, lambda: torch.exp(x))
        picked = y[rows]
        offer_derived(picked, y, lambda full: full[rows])
        _, saved = kept_by_linear(picked, linear)
        unoffered = torch.exp(x).requires_grad_()
        picked_plain = unoffered[rows]
        offer_derived(picked_plain, unoffered, lambda full: full[rows])
        _, kept = kept_by_linear(picked_plain, linear)
    assert not shares_storage(saved, picked) and torch.equal(saved, picked)
    assert shares_storage(kept, picked_plain)


def test_no_offers_without_grad():
    x = torch.randn(5, 3)
    with RecomputeScope() as scope, torch.no_grad():
        offer(torch.tanh(x), lambda: torch.tanh(x))
    assert not scope._offers


def decoder_inputs(seed: int):
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(2, 400, 3, generator=gen, dtype=torch.float64) - 0.5
    features = torch.randn(2, 400, 8, generator=gen, dtype=torch.float64)
    targets = torch.rand(2, 600, 3, generator=gen, dtype=torch.float64) * 0.8 - 0.4
    return points, features, targets


def train_step_gradients(model, points, features, targets):
    model.zero_grad()
    features = features.clone().requires_grad_()
    out = model(points, features, targets=model.occupancy_targets(targets))
    loss = (out.points.sum(-1) ** 2).sum() + sum(
        torch.nn.functional.binary_cross_entropy_with_logits(level.logits, level.targets) for level in out.levels
    )
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out, features.grad, grads


@pytest.mark.parametrize("num_threads", [1, 2], indirect=True)
@pytest.mark.parametrize("kind", [SparseUNetDecoder, DenseUNetDecoder])
def test_decoders_give_identical_values_and_gradients_with_and_without_recomputation(kind, num_threads, monkeypatch):
    recipes = []
    pack = RecomputeScope._pack

    def counting_pack(self, saved):
        packed = pack(self, saved)
        recipes.append(packed is not saved)
        return packed

    monkeypatch.setattr(RecomputeScope, "_pack", counting_pack)
    torch.manual_seed(0)
    model = kind(in_channels=8, channels=(4, 8, 8), resolution=8, points_per_voxel=2, voxel_floor=0.5).double().train()
    assert not model.recompute  # off by default
    points, features, targets = decoder_inputs(seed=1)
    out_a, feat_a, grads_a = train_step_gradients(model, points, features, targets)
    assert not recipes
    model.recompute = True
    out_b, feat_b, grads_b = train_step_gradients(model, points, features, targets)
    assert sum(recipes) >= 2 * len(model.channels)  # at least each level's two blocks recompute
    assert torch.equal(out_a.points, out_b.points) and torch.equal(out_a.lengths, out_b.lengths)
    assert torch.equal(feat_a, feat_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == len(list(model.parameters()))
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name
