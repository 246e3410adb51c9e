"""DenseUNetDecoder: layout of its outputs, equality with the sparse decoder on a fully occupied grid
(the sparse decoder is itself checked against a dense float64 reference in test_sparse_unet.py), and
a few training steps on a tiny target."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pointstn.models.dense_unet import DenseUNetDecoder, grid_coords
from pointstn.models.sparse_unet import SparseUNetDecoder
from pointstn.ops.voxel import linearize_coords

TOL64 = {"rtol": 1e-9, "atol": 1e-10}


def sphere_points(*, batch: int, points: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(batch, points, 3, generator=g, dtype=dtype)
    radius = 0.25 + 0.2 * torch.rand(batch, 1, 1, generator=g, dtype=dtype)
    return radius * direction / direction.norm(dim=-1, keepdim=True)


def copy_sparse_into_dense(sparse: SparseUNetDecoder, dense: DenseUNetDecoder) -> None:
    """Dense weights from sparse ones: Conv3d = W.permute(0, 4, 1, 2, 3), ConvTranspose3d = W.permute(4, 0, 1, 2, 3)."""

    def block(dst, conv, norm):  # dst: Sequential(conv, ChannelNormReLU)
        dst[0].weight.copy_(conv.weight.permute(0, 4, 1, 2, 3))
        dst[1].load_state_dict(norm.module.state_dict())

    with torch.no_grad():
        block(dense.stem, sparse.stem[0], sparse.stem[1])
        for d, s in zip(dense.down, sparse.down):
            block(d[0], s[0], s[1])
            block(d[1], s[3][0], s[3][1])
        block(dense.grow, sparse.grow[0], sparse.grow[1])
        for d, s in zip(dense.up, sparse.up):
            d.weight.copy_(s.weight.permute(4, 0, 1, 2, 3))
        for d, s in zip(dense.up_norm, sparse.up_norm):
            d[0].load_state_dict(s[0].module.state_dict())
        for d, s in zip(dense.refine, sparse.refine):
            block(d, s[0], s[1])
        for d, s in zip(dense.heads, sparse.heads):
            d.weight.copy_(s.weight.view(d.weight.shape))
            d.bias.copy_(s.bias)
        dense.point_head.load_state_dict(sparse.point_head.state_dict())
        if sparse.lift is not None:
            dense.lift.load_state_dict(sparse.lift.state_dict())


def matched_decoders(*, seed: int, r: int = 4, batch: int = 2, **extra):
    """(sparse, dense, generator, points): float64 decoders with the same random weights (channels 4, 5) and
    one input point at the centre of every voxel of an r^3 grid, so nothing is pruned and both see every site."""
    kwargs = {"in_channels": 3, "channels": (4, 5), "resolution": r, "points_per_voxel": 2, "prune_threshold": 0.0,
              **extra}
    sparse = SparseUNetDecoder(**kwargs).double()
    dense = DenseUNetDecoder(**kwargs).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sparse.parameters():
            p.copy_(0.6 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    copy_sparse_into_dense(sparse, dense)
    centres = (grid_coords(batch_size=1, resolution=r, device=torch.device("cpu"))[:, 1:].double() + 0.5) / r - 0.5
    return sparse, dense, g, centres.expand(batch, -1, -1).contiguous()


def test_equals_sparse_decoder_on_a_fully_occupied_grid_values_and_gradients():
    """With every voxel occupied and nothing pruned, each sparse layer is its dense convolution everywhere."""
    r, batch = 4, 2
    sparse, dense, g, points = matched_decoders(seed=0, r=r, batch=batch)
    features = torch.randn(batch, r**3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    out_s = sparse.eval()(points, features)
    out_d = dense.eval()(points, features)
    for ls, ld in zip(out_s.levels, out_d.levels):
        assert ls.coords.shape[0] == ld.coords.shape[0] == batch * ls.resolution**3
        order = torch.argsort(linearize_coords(ls.coords, resolution=ls.resolution))
        torch.testing.assert_close(ls.coords[order], ld.coords)
        torch.testing.assert_close(ls.logits[order], ld.logits, **TOL64)
    assert out_s.lengths.tolist() == out_d.lengths.tolist() == [2 * r**3] * batch
    torch.testing.assert_close(out_s.points, out_d.points, **TOL64)
    weights = torch.randn(out_d.points.shape, generator=g, dtype=torch.float64)
    (grad_s,) = torch.autograd.grad((out_s.points * weights).sum() + out_s.levels[1].logits.sum(), features)
    (grad_d,) = torch.autograd.grad((out_d.points * weights).sum() + out_d.levels[1].logits.sum(), features)
    torch.testing.assert_close(grad_s, grad_d, **TOL64)


def test_levels_list_every_voxel_in_lexicographic_order_with_dense_targets():
    model = DenseUNetDecoder(in_channels=4, channels=(4, 8, 8), resolution=16, points_per_voxel=3)
    points = sphere_points(batch=2, points=200, seed=1)
    features = torch.randn(2, 200, 4, generator=torch.Generator().manual_seed(2))
    targets = model.occupancy_targets(points)
    out = model(points, features, targets=targets)
    assert [level.resolution for level in out.levels] == [16, 8, 4]
    for index, level in enumerate(out.levels):
        r = level.resolution
        assert level.coords.shape == (2 * r**3, 4) and level.coords.dtype == torch.int32
        keys = linearize_coords(level.coords, resolution=r)
        assert torch.equal(keys, torch.arange(2 * r**3))
        assert level.logits.shape == (2 * r**3,)
        assert torch.equal(level.targets.bool(), targets.dense(index).reshape(-1))
    # training keeps the occupied finest voxels (plus predicted ones): K points for each
    assert int(out.lengths.sum()) >= 3 * int(out.levels[0].targets.sum())
    assert out.points.shape == (2, int(out.lengths.max()), 3) and (out.lengths % 3 == 0).all()
    model.eval()
    with torch.no_grad():
        model.heads[0].bias.fill_(-20.0)
    out = model(points, features)
    assert out.lengths.tolist() == [3, 3]  # nothing above threshold: each sample's top voxel only
    assert all(level.targets is None for level in out.levels)


def test_gradients_reach_features_and_every_parameter():
    model = DenseUNetDecoder(in_channels=3, channels=(4, 6), resolution=8, points_per_voxel=2)
    points = sphere_points(batch=2, points=100, seed=3)
    features = torch.randn(2, 100, 3, requires_grad=True)
    out = model(points, features, targets=model.occupancy_targets(points))
    loss = sum(F.binary_cross_entropy_with_logits(level.logits, level.targets) for level in out.levels)
    (loss + out.points.square().sum()).backward()
    assert features.grad.abs().sum() > 0
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_trains_on_a_tiny_target():
    torch.manual_seed(0)
    model = DenseUNetDecoder(in_channels=4, channels=(8, 16), resolution=8, points_per_voxel=2)
    points = sphere_points(batch=2, points=150, seed=4)
    features = torch.randn(2, 150, 4, generator=torch.Generator().manual_seed(5))
    targets = model.occupancy_targets(points)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        out = model(points, features, targets=targets)
        loss = sum(F.binary_cross_entropy_with_logits(level.logits, level.targets) for level in out.levels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0], losses
    # after training, inference alone (no targets kept) recovers most of the occupied voxels
    model.eval()
    with torch.no_grad():
        out = model(points, features, targets=targets)
    finest = out.levels[0]
    predicted, occupied = finest.logits > 0, finest.targets.bool()
    hits = int((predicted & occupied).sum())
    assert hits > 0.9 * int(occupied.sum()) and hits > 0.9 * int(predicted.sum())  # recall and precision
    assert out.lengths.tolist() == (2 * torch.bincount(finest.coords[predicted][:, 0].long(), minlength=2)).tolist()


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        DenseUNetDecoder(in_channels=3, channels=(4, 4, 4), resolution=6)
    with pytest.raises(ValueError, match="in_channels"):
        DenseUNetDecoder(in_channels=0)


def test_level_features_equal_in_both_decoders_and_are_required():
    """With level_features, each level adds a linear map of lift(coords, r): the dense decoder (every voxel)
    equals the sparse one on a fully occupied grid, and gradients reach the lifted features."""
    r, batch = 4, 2
    sparse, dense, g, points = matched_decoders(seed=1, r=r, batch=batch, level_features=True)
    features = torch.randn(batch, r**3, 3, generator=g, dtype=torch.float64)
    table = {res: torch.randn(batch, res, res, res, 3, generator=g, dtype=torch.float64, requires_grad=True)
             for res in (r, r // 2)}

    def lift(coords, resolution):  # a per-voxel feature table, looked up by coordinates
        b, i, j, k = coords.long().unbind(dim=1)
        return table[resolution][b, i, j, k]

    out_s = sparse.eval()(points, features, lift=lift)
    out_d = dense.eval()(points, features, lift=lift)
    for ls, ld in zip(out_s.levels, out_d.levels):
        order = torch.argsort(linearize_coords(ls.coords, resolution=ls.resolution))
        torch.testing.assert_close(ls.logits[order], ld.logits, **TOL64)
    torch.testing.assert_close(out_s.points, out_d.points, **TOL64)
    grads_s = torch.autograd.grad(out_s.points.sum() + out_s.levels[1].logits.sum(), list(table.values()))
    grads_d = torch.autograd.grad(out_d.points.sum() + out_d.levels[1].logits.sum(), list(table.values()))
    for a, b in zip(grads_s, grads_d):
        torch.testing.assert_close(a, b, **TOL64)
        assert a.abs().sum() > 0
    for decoder in (sparse, dense):
        with pytest.raises(ValueError, match="pass `lift`"):
            decoder(points, features)
