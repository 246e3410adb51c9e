"""The point heads: the mlp head against a float64 reference written out by hand (values and gradients),
its bound, its errors, and the mlp head through both decoders and the whole model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pointstn.config import ConfigError, ExperimentConfig, load_config
from pointstn.models.build import build_model
from pointstn.models.point_head import MLPPointHead, PointHead, build_point_head
from tests.models.test_dense_unet import TOL64, matched_decoders

REPO = Path(__file__).resolve().parents[2]


def random_voxels(*, g: torch.Generator, voxels: int, batch: int, resolution: int) -> torch.Tensor:
    """(V, 4) int32 distinct-enough voxels, every sample of the batch represented."""
    b = torch.arange(voxels) % batch
    ijk = torch.randint(0, resolution, (voxels, 3), generator=g)
    return torch.cat((b[:, None], ijk), dim=1).int()


def reference_points(head: MLPPointHead, coords, features, context, *, resolution: int, batch: int):
    """The mlp head written out with explicit matrix products, voxel by voxel: list of (n_b * K, 3) per sample."""
    lin = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    h, k = 1.0 / resolution, head.points_per_voxel
    clouds = [[] for _ in range(batch)]
    for v in range(coords.shape[0]):
        b, i, j, l = (int(c) for c in coords[v])
        centre = torch.tensor([i, j, l], dtype=torch.float64) * h - 0.5 + 0.5 * h
        glob = head.context.weight @ context[b] + head.context.bias
        x = torch.cat((features[v], centre, glob))
        x = torch.clamp(lin[0].weight @ x + lin[0].bias, min=0)
        x = torch.clamp(lin[1].weight @ x + lin[1].bias, min=0)
        offsets = torch.tanh(lin[2].weight @ x + lin[2].bias).view(k, 3)
        clouds[b].append(centre + offsets * h)
    return [torch.cat(c) for c in clouds]


def test_mlp_head_matches_a_float64_reference_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    r, batch, k = 8, 3, 2
    head = MLPPointHead(in_channels=5, points_per_voxel=k, context_channels=7).double()
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    coords = random_voxels(g=g, voxels=11, batch=batch, resolution=r)
    features = torch.randn(11, 5, generator=g, dtype=torch.float64, requires_grad=True)
    context = torch.randn(batch, 7, generator=g, dtype=torch.float64, requires_grad=True)
    order = torch.randperm(11, generator=g)
    points, lengths = head(coords, features, resolution=r, batch_size=batch, order=order, context=context)
    expected = reference_points(head, coords[order], features[order], context, resolution=r, batch=batch)
    assert lengths.tolist() == [c.shape[0] for c in expected]
    weights = torch.randn(points.shape, generator=g, dtype=torch.float64)
    got_loss = sum((points[b, : lengths[b]] * weights[b, : lengths[b]]).sum() for b in range(batch))
    want_loss = sum((expected[b] * weights[b, : lengths[b]]).sum() for b in range(batch))
    for b in range(batch):
        torch.testing.assert_close(points[b, : lengths[b]], expected[b], **TOL64)
    inputs = (features, context, head.context.weight, head.mlp[0].weight)
    got = torch.autograd.grad(got_loss, inputs)
    want = torch.autograd.grad(want_loss, inputs)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, **TOL64)
    assert all(a.abs().sum() > 0 for a in got)


def test_every_point_stays_within_one_voxel_of_its_centre():
    g = torch.Generator().manual_seed(1)
    r = 4
    head = MLPPointHead(in_channels=3, points_per_voxel=5, context_channels=2)
    with torch.no_grad():
        head.mlp[-1].bias.fill_(50.0)  # saturate tanh: the bound is reached, not exceeded
    coords = random_voxels(g=g, voxels=6, batch=1, resolution=r)
    points, _ = head(coords, torch.randn(6, 3, generator=g), resolution=r, batch_size=1,
                     context=torch.randn(1, 2, generator=g))
    centres = ((coords[:, 1:].float() + 0.5) / r - 0.5).repeat_interleave(5, dim=0)
    assert ((points[0] - centres).abs() <= 1.0 / r + 1e-6).all()


def test_mlp_head_errors_and_the_builder():
    head = build_point_head("mlp", in_channels=3, points_per_voxel=2, context_channels=4)
    assert isinstance(head, MLPPointHead)
    coords = torch.zeros(1, 4, dtype=torch.int32)
    with pytest.raises(ValueError, match="reads a global image feature per sample: pass `context`"):
        head(coords, torch.zeros(1, 3), resolution=4, batch_size=1)
    with pytest.raises(ValueError, match=r"context must be \(B, 4\), got \(1, 3\)"):
        head(coords, torch.zeros(1, 3), resolution=4, batch_size=1, context=torch.zeros(1, 3))
    linear = build_point_head("linear", in_channels=3, points_per_voxel=2, context_channels=None)
    assert type(linear) is PointHead and list(linear.state_dict()) == ["linear.weight", "linear.bias"]
    linear(coords, torch.zeros(1, 3), resolution=4, batch_size=1, context=torch.zeros(1, 9))  # ignored
    with pytest.raises(ValueError, match="needs context_channels"):
        build_point_head("mlp", in_channels=3, points_per_voxel=2, context_channels=None)
    with pytest.raises(ValueError, match="unknown point head 'conv'; valid: linear, mlp"):
        build_point_head("conv", in_channels=3, points_per_voxel=2, context_channels=4)


def test_dense_decoder_equals_sparse_decoder_with_the_mlp_head():
    r, batch = 4, 2
    sparse, dense, g, points = matched_decoders(seed=3, r=r, batch=batch, point_head="mlp", context_channels=6)
    assert isinstance(sparse.point_head, MLPPointHead) and isinstance(dense.point_head, MLPPointHead)
    features = torch.randn(batch, r**3, 3, generator=g, dtype=torch.float64)
    context = torch.randn(batch, 6, generator=g, dtype=torch.float64, requires_grad=True)
    out_s = sparse.eval()(points, features, context=context)
    out_d = dense.eval()(points, features, context=context)
    torch.testing.assert_close(out_s.points, out_d.points, **TOL64)
    (grad_s,) = torch.autograd.grad(out_s.points.square().sum(), context)
    (grad_d,) = torch.autograd.grad(out_d.points.square().sum(), context)
    torch.testing.assert_close(grad_s, grad_d, **TOL64)
    assert grad_s.abs().sum() > 0


def test_the_config_key_builds_an_mlp_head_that_reads_the_image():
    """model.decoder.point_head=mlp: the head sees the backbone's pooled feature, so the output points move
    with the image through it (not only through the decoder's features)."""
    torch.manual_seed(0)
    smoke = REPO / "configs" / "smoke.yaml"
    model = build_model(load_config(smoke, ExperimentConfig, ["model.decoder.point_head=mlp"]))
    head = model.decoder.point_head
    assert isinstance(head, MLPPointHead) and head.context_channels == model.backbone.global_channels
    out = model(torch.rand(2, 3, 64, 64), gt_points=torch.rand(2, 300, 3) - 0.5)
    (grad,) = torch.autograd.grad(out.points.square().sum(), head.context.weight)
    assert grad.abs().sum() > 0
    assert type(build_model(load_config(smoke, ExperimentConfig)).decoder.point_head) is PointHead  # the default
    with pytest.raises(ConfigError, match="model.decoder.point_head"):
        load_config(smoke, ExperimentConfig, ["model.decoder.point_head=conv"])
