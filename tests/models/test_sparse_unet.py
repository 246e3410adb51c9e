"""SparseUNetDecoder against a slow dense float64 re-evaluation of the same parameters.

The reference (`dense_reference`) never touches spconv or the decoder's helpers: it voxelizes with a
Python loop, runs every sparse layer as the dense convolution documented in `pointstn.ops.sparse.conv`
on a grid masked to the active sites (sites found by max-pooling / repeating occupancy masks), and
applies the pruning rule per sample by sorting Python lists.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pointstn.models.decoder_types import DecoderOutput
from pointstn.models.sparse_unet import SparseUNetDecoder, keep_voxels, occupancy_targets, true_or_all
from pointstn.ops.voxel import linearize_coords

TOL64 = {"rtol": 1e-9, "atol": 1e-10}
# parameters for the decoder with coarse context blocks: its pruning has no ties (a voxel whose features are
# all zero after ReLU gives its children the same logit, and the two implementations break ties differently)
# and the coarse cap binds, as with seed 1 for the plain decoder
SEED_CONTEXT = 2


def random_inputs(*, batch: int, points: int, channels: int, seed: int, dtype=torch.float64):
    """Points on noisy spheres of random radius inside the unit cube, a few outside it; random features."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(batch, points, 3, generator=g, dtype=dtype)
    radius = 0.2 + 0.25 * torch.rand(batch, 1, 1, generator=g, dtype=dtype)
    xyz = radius * direction / direction.norm(dim=-1, keepdim=True) + 0.02 * torch.randn(
        batch, points, 3, generator=g, dtype=dtype
    )
    xyz[:, :2] = 0.7  # outside the grid: ignored
    features = torch.randn(batch, points, channels, generator=g, dtype=dtype)
    return xyz, features


def randomize_parameters(model: torch.nn.Module, seed: int) -> None:
    """Parameters of order one (including norm affines and head biases), so pruning decisions are far from ties."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.6 * torch.randn(p.shape, generator=g, dtype=p.dtype))


# ----------------------------------------------------------------------------------------- reference
def naive_cell(p, r):
    return tuple(min(math.floor((float(v) + 0.5) * r), r - 1) for v in p)


def naive_occupied(points, lengths, r) -> set:
    out = set()
    for b in range(points.shape[0]):
        for p in points[b, : int(lengths[b])]:
            if all(-0.5 <= float(v) <= 0.5 for v in p):
                out.add((b, *naive_cell(p, r)))
    return out


def site_mask_to_list(mask):
    return [tuple(int(v) for v in row) for row in mask.nonzero()]


def dense_block(x, mask, conv_weight, norm, *, padding=1, stride=1):
    """conv (spconv weight layout) -> ChannelNorm -> ReLU, zero outside `mask` (B, 1, D, H, W)."""
    y = F.conv3d(x, conv_weight.permute(0, 4, 1, 2, 3), stride=stride, padding=padding)
    return torch.relu(norm(y)) * mask


def naive_keep(candidates, logits, occupied, threshold, cap, batch_size, floor=1):
    """candidates: list of (b, i, j, k); returns the kept subset as a set."""
    kept = set()
    for b in range(batch_size):
        rows = [(site, logits[n], occupied[n]) for n, site in enumerate(candidates) if site[0] == b]
        if not rows:
            continue
        rows.sort(key=lambda row: (not row[2], -row[1]))
        wanted = sum(1 for _, logit, occ in rows if occ or logit > threshold)
        kept.update(site for site, _, _ in rows[: max(floor, min(cap, wanted))])
    return kept


def dense_reference(model, points, features, lengths, gt_points, *, training):
    """Everything `model.forward` returns, recomputed densely: (levels [(sites, logits, targets)], points)."""
    B, R, L = points.shape[0], model.resolution, len(model.channels)
    dtype = features.dtype
    threshold = math.log(model.prune_threshold / (1 - model.prune_threshold))
    cells = {}
    for b in range(B):
        for n in range(int(lengths[b])):
            if all(-0.5 <= float(v) <= 0.5 for v in points[b, n]):
                cells.setdefault((b, *naive_cell(points[b, n], R)), []).append(features[b, n])
    grid = features.new_zeros(B, model.in_channels, R, R, R)
    mask = torch.zeros(B, 1, R, R, R, dtype=dtype)
    for (b, i, j, k), rows in cells.items():
        grid[b, :, i, j, k] = torch.stack(rows).mean(dim=0)
        mask[b, 0, i, j, k] = 1
    for b in range(B):
        if not mask[b].any():
            mask[b, 0, R // 2, R // 2, R // 2] = 1
    x = dense_block(grid * mask, mask, model.stem[0].weight, model.stem[1].module)
    skips = [(x, mask)]
    for down in model.down:
        mask = F.max_pool3d(mask, 2)
        x = dense_block(x, mask, down[0].weight, down[1].module, padding=0, stride=2)
        x = dense_block(x, mask, down[3][0].weight, down[3][1].module)
        skips.append((x, mask))
    mask = F.max_pool3d(mask, 3, stride=1, padding=1)
    x = dense_block(x, mask, model.grow[0].weight, model.grow[1].module)
    for block in model.context:  # residual blocks on the grown coarsest level
        x = x + dense_block(x, mask, block[0].weight, block[1].module)
    gt_sets = [naive_occupied(gt_points, torch.full((B,), gt_points.shape[1]), r) for r in model.resolutions]
    levels = [None] * L
    for level in reversed(range(L)):
        if level < L - 1:
            mask = mask.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)
            y = F.conv_transpose3d(x, model.up[level].weight.permute(4, 0, 1, 2, 3), stride=2)
            x = torch.relu(model.up_norm[level][0].module(y + skips[level][0])) * mask
        head = model.heads[level]
        logit_grid = torch.einsum("bcijk,c->bijk", x, head.weight[0]) + head.bias[0]
        sites = site_mask_to_list(mask[:, 0])
        logits = torch.stack([logit_grid[s] for s in sites])
        occupied = [s in gt_sets[level] for s in sites]
        levels[level] = (sites, logits, occupied)
        kept = naive_keep(sites, logits.tolist(), occupied if training else [False] * len(sites),
                          threshold, model.caps[level], B, model.floors[level])  # fmt: skip
        mask = torch.zeros_like(mask)
        for b, i, j, k in kept:
            mask[b, 0, i, j, k] = 1
        x = dense_block(x * mask, mask, model.refine[level][0].weight, model.refine[level][1].module)
    h, K = 1.0 / R, model.points_per_voxel
    clouds = []
    for b in range(B):
        out = []
        for _, i, j, k in sorted(s for s in site_mask_to_list(mask[:, 0]) if s[0] == b):
            offsets = torch.tanh(model.point_head.linear(x[b, :, i, j, k])).view(K, 3)
            centre = torch.tensor([i, j, k], dtype=dtype) * h - 0.5 + 0.5 * h
            out.append(centre + offsets * h)
        clouds.append(torch.cat(out))
    return levels, clouds


def weighted_sum(sites_keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A loss whose weight per voxel depends only on the voxel's key, so both orders agree."""
    return (values * torch.sin(0.37 * sites_keys.to(values.dtype))).sum()


def sparse_loss(out: DecoderOutput, model) -> torch.Tensor:
    total = 0
    for level in out.levels:
        total = total + weighted_sum(linearize_coords(level.coords, resolution=level.resolution), level.logits)
    for b in range(out.points.shape[0]):
        cloud = out.points[b, : int(out.lengths[b])]
        total = total + (cloud * torch.cos(torch.arange(cloud.numel(), dtype=cloud.dtype)).view(-1, 3)).sum()
    return total


def reference_loss(levels, clouds, model) -> torch.Tensor:
    total = 0
    for (sites, logits, _), r in zip(levels, model.resolutions):
        keys = linearize_coords(torch.tensor(sites), resolution=r)
        total = total + weighted_sum(keys, logits)
    for cloud in clouds:
        total = total + (cloud * torch.cos(torch.arange(cloud.numel(), dtype=cloud.dtype)).view(-1, 3)).sum()
    return total


# ------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize(("floor", "coarse_blocks", "seed"), [(0.0, 0, 1), (0.2, 0, 1), (0.0, 2, SEED_CONTEXT)],
                         ids=["floor1", "floor0.2", "context2"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_matches_dense_reference_values_and_gradients(training, floor, coarse_blocks, seed):
    torch.manual_seed(0)
    model = SparseUNetDecoder(in_channels=3, channels=(4, 5), resolution=8, points_per_voxel=2, voxel_budget=0.6,
                              voxel_floor=floor, coarse_blocks=coarse_blocks)
    model = model.double().train(training)
    randomize_parameters(model, seed=seed)
    points, features = random_inputs(batch=3, points=40, channels=3, seed=2)
    lengths = torch.tensor([40, 25, 2])  # the last sample's only valid points are outside the grid
    gt, _ = random_inputs(batch=3, points=60, channels=1, seed=3)
    gt = gt.clamp(-0.5, 0.5)
    features.requires_grad_()
    out = model(points, features, lengths, targets=model.occupancy_targets(gt))
    levels, clouds = dense_reference(model, points, features, lengths, gt, training=training)

    assert model.caps == (39, 10)
    for level, (sites, logits, occupied) in zip(out.levels, levels):
        keys = linearize_coords(level.coords, resolution=level.resolution)
        order = torch.argsort(keys)
        assert [tuple(c) for c in level.coords[order].tolist()] == sites
        torch.testing.assert_close(level.logits[order], logits, **TOL64)
        assert level.targets[order].tolist() == [float(o) for o in occupied]
    assert out.lengths.tolist() == [c.shape[0] for c in clouds]
    for b, cloud in enumerate(clouds):
        torch.testing.assert_close(out.points[b, : cloud.shape[0]], cloud, **TOL64)
        assert (out.points[b, cloud.shape[0] :] == 0).all()
    # pruning removed coarse candidates and the cap (10 at R = 4) bound, or the test would be too easy
    kept_coarse = torch.bincount(out.levels[0].coords[:, 0].long(), minlength=3) // 8
    candidates_coarse = torch.bincount(out.levels[1].coords[:, 0].long(), minlength=3)
    assert (kept_coarse < candidates_coarse).all() and (kept_coarse == model.caps[1]).any()

    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(sparse_loss(out, model), [features, *params])
    ref_grads = torch.autograd.grad(reference_loss(levels, clouds, model), [features, *params])
    for name, g, r in zip(["features"] + [n for n, _ in model.named_parameters()], grads, ref_grads):
        torch.testing.assert_close(g, r, **TOL64, msg=lambda m, name=name: f"gradient of {name}: {m}")


@pytest.mark.parametrize("threads", [1, 2])
def test_coarse_context_on_a_full_grid_same_on_the_dense_path_and_in_spconv(threads, monkeypatch):
    """A lattice fills the coarsest grid, so its context blocks run as dense conv3d (`dense_path`): the
    decoder's output and gradients must equal spconv's, at 1 and 2 threads (DESIGN.md section 4)."""
    from pointstn.models.reconstructor import lattice_points
    from pointstn.ops.sparse import dense_path, set_dense_path

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = SparseUNetDecoder(in_channels=6, channels=(8, 8, 16), resolution=32, points_per_voxel=2,
                                  coarse_blocks=2, voxel_floor=0.5).eval()
        randomize_parameters(model, seed=5)
        batch = 4  # 4 x 8^3 = 2048 coarse sites: the smallest grid the dense path takes
        points = lattice_points(32).expand(batch, -1, -1).contiguous()
        features = torch.randn(batch, points.shape[1], 6, generator=torch.Generator().manual_seed(6))
        calls = []
        original = dense_path.dense_convolution
        monkeypatch.setattr("pointstn.ops.sparse.conv.dense_convolution",
                            lambda *a, **k: calls.append(1) or original(*a, **k))
        results = []
        for enabled in (True, False):
            set_dense_path(model, enabled)
            calls.clear()
            x = features.clone().requires_grad_()
            out = model(points, x)
            # dense: grow, both context blocks and the coarsest refine block at least; spconv: none
            assert len(calls) >= 4 if enabled else not calls, (enabled, len(calls))
            grads = torch.autograd.grad(out.points[..., 0].sum() + sum(lv.logits.sum() for lv in out.levels),
                                        [x, *model.context.parameters()])
            results.append((out, grads))
        (dense, dense_grads), (sparse, sparse_grads) = results
        for a, b in zip(dense.levels, sparse.levels):  # the same voxels, rows in another order
            ka, kb = (torch.argsort(linearize_coords(lv.coords, resolution=lv.resolution)) for lv in (a, b))
            assert torch.equal(a.coords[ka], b.coords[kb]) and torch.equal(a.kept[ka], b.kept[kb])
            torch.testing.assert_close(a.logits[ka], b.logits[kb], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(dense.points, sparse.points, rtol=1e-4, atol=1e-5)
        for a, b in zip(dense_grads, sparse_grads):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    finally:
        torch.set_num_threads(before)


def test_shapes_lengths_and_bounds_float32():
    model = SparseUNetDecoder(in_channels=6, channels=(8, 8, 16), resolution=16, points_per_voxel=3)
    points, features = random_inputs(batch=2, points=300, channels=6, seed=4, dtype=torch.float32)
    targets = model.occupancy_targets(points.clamp(-0.5, 0.5))
    out = model(points, features, targets=targets)
    assert [level.resolution for level in out.levels] == [16, 8, 4]
    for level in out.levels:
        v = level.coords.shape[0]
        assert level.coords.dtype == torch.int32 and level.coords.shape == (v, 4)
        assert level.logits.shape == (v,) and level.targets.shape == (v,) and level.targets.dtype == torch.float32
        assert set(level.targets.unique().tolist()) <= {0.0, 1.0}
    assert out.points.shape == (2, int(out.lengths.max()), 3) and out.lengths.dtype == torch.int64
    assert (out.lengths % 3 == 0).all() and (out.lengths >= 3).all()
    # training keeps every occupied finest voxel: at least the ground truth's voxel count
    finest = out.levels[0]
    assert int(out.lengths.sum()) // 3 >= int(finest.targets.sum())
    # a point lies within one voxel of its voxel's centre: inside the grid grown by half a voxel
    assert out.points.abs().max() <= 0.5 + 0.5 / 16 + 1e-6
    model.eval()
    out_eval = model(points, features)
    assert all(level.targets is None for level in out_eval.levels)


def test_pruning_train_keeps_targets_eval_keeps_top_voxel_only():
    model = SparseUNetDecoder(in_channels=4, channels=(4, 8), resolution=8, points_per_voxel=1, prune_threshold=0.5)
    with torch.no_grad():
        for head in model.heads:
            head.weight.zero_()
            head.bias.fill_(-5.0)  # every voxel predicted empty
    points, features = random_inputs(batch=2, points=50, channels=4, seed=5, dtype=torch.float32)
    gt = points.clamp(-0.5, 0.5)
    targets = model.occupancy_targets(gt)
    out = model.train()(points, features, targets=targets)
    # training: the finest kept voxels are exactly the occupied candidates (nothing predicted)
    finest = out.levels[0]
    occupied = finest.coords[finest.targets.bool()]
    assert out.lengths.tolist() == torch.bincount(occupied[:, 0].long(), minlength=2).tolist()
    out = model.eval()(points, features, targets=targets)
    # inference: nothing beats the threshold, so every level keeps each sample's top voxel only
    assert out.lengths.tolist() == [1, 1]
    assert out.levels[0].coords.shape[0] == 2 * 8  # the 8 children of one kept parent per sample


def test_point_voxels_true_emits_training_points_from_the_true_voxels_only():
    """point_voxels="true": in training with targets, only the ground truth's kept finest voxels reach the
    point head (every kept one in inference, or without targets); "kept" sends them all."""
    kwargs = {"in_channels": 4, "channels": (4, 8), "resolution": 8, "points_per_voxel": 2, "prune_threshold": 0.0}
    points, features = random_inputs(batch=2, points=40, channels=4, seed=7, dtype=torch.float32)
    seen = []
    for mode in ("true", "kept"):
        torch.manual_seed(0)
        model = SparseUNetDecoder(**kwargs, point_voxels=mode)
        model.point_head.register_forward_hook(lambda module, args, out: seen.append(args[0]))
        targets = model.occupancy_targets(points.clamp(-0.5, 0.5))
        out = model.train()(points, features, targets=targets)
        finest = out.levels[0]
        kept_true = finest.targets[finest.kept].bool()
        assert kept_true.any() and not kept_true.all()  # threshold 0: every candidate kept, some empty
        emitted = seen[-1]
        expected = finest.coords[finest.kept][kept_true] if mode == "true" else finest.coords[finest.kept]
        assert emitted.shape == expected.shape
        key = lambda c: sorted(map(tuple, c.tolist()))
        assert key(emitted) == key(expected)
        assert out.lengths.tolist() == (torch.bincount(expected[:, 0].long(), minlength=2) * 2).tolist()
        model.eval()(points, features, targets=targets)
        assert seen[-1].shape[0] == int(model.eval()(points, features).levels[0].kept.sum())
    with pytest.raises(ValueError, match="point_voxels must be 'kept' or 'true'"):
        SparseUNetDecoder(**kwargs, point_voxels="own")


def test_true_or_all_falls_back_to_every_voxel_of_a_sample_without_true_ones():
    batch_index = torch.tensor([0, 0, 1, 1, 2])
    occupied = torch.tensor([True, False, False, False, True])
    assert true_or_all(batch_index, occupied, batch_size=3).tolist() == [True, False, True, True, True]


def test_single_point_and_empty_samples_still_give_clouds():
    model = SparseUNetDecoder(in_channels=2, channels=(4, 4, 4), resolution=16, points_per_voxel=2).train()
    with torch.no_grad():
        for head in model.heads:
            head.bias.fill_(-10.0)  # nothing beats the threshold: only the top-voxel rule keeps voxels
    points = torch.tensor([[[0.1, -0.2, 0.3]], [[0.9, 0.0, 0.0]]])  # sample 1: outside the grid
    features = torch.randn(2, 1, 2, requires_grad=True)
    out = model(points, features)
    assert out.lengths.tolist() == [2, 2]
    out.points.sum().backward()
    assert features.grad[0].abs().sum() > 0 and features.grad[1].abs().sum() == 0
    out = model.eval()(points, features, lengths=torch.tensor([0, 0]))
    assert out.lengths.tolist() == [2, 2]
    assert out.levels[2].coords.shape[0] == 2 * 27  # the centre voxel of each empty sample, dilated


def test_gradients_reach_features_and_every_parameter():
    model = SparseUNetDecoder(in_channels=5, channels=(4, 6, 8), resolution=16, points_per_voxel=2)
    points, features = random_inputs(batch=2, points=200, channels=5, seed=6, dtype=torch.float32)
    features.requires_grad_()
    out = model(points, features, targets=model.occupancy_targets(points.clamp(-0.5, 0.5)))
    loss = sum(F.binary_cross_entropy_with_logits(level.logits, level.targets) for level in out.levels)
    (loss + out.points.square().sum()).backward()
    assert features.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_keep_voxels_matches_naive_rule():
    g = torch.Generator().manual_seed(7)
    for trial in range(20):
        n, batch = int(torch.randint(1, 60, (1,), generator=g)), 3
        batch_index = torch.randint(0, batch, (n,), generator=g)
        logits = torch.randn(n, generator=g, dtype=torch.float64)
        occupied = torch.rand(n, generator=g) < 0.3 if trial % 2 else None
        cap = int(torch.randint(1, 8, (1,), generator=g))
        floor = int(torch.randint(1, cap + 1, (1,), generator=g)) if trial % 3 else 1
        keep = keep_voxels(batch_index, logits, occupied, threshold_logit=0.3, cap=cap, batch_size=batch, floor=floor)
        sites = [(int(b), row) for row, b in enumerate(batch_index)]
        expected = naive_keep(
            sites, logits.tolist(), [False] * n if occupied is None else occupied.tolist(), 0.3, cap, batch, floor
        )
        assert set(keep.nonzero()[:, 0].tolist()) == {row for _, row in expected}


def test_occupancy_targets_match_naive_sets_and_reject_unnormalized_clouds():
    points, _ = random_inputs(batch=2, points=80, channels=1, seed=8)
    points = points.clamp(-0.5, 0.5)
    lengths = torch.tensor([80, 33])
    pyramid = occupancy_targets(points, lengths, resolutions=(16, 8, 4))
    for level, r in zip(pyramid.levels, (16, 8, 4)):
        assert {tuple(c) for c in level.tolist()} == naive_occupied(points, lengths, r)
    slightly = points.clone()
    slightly[0, 0] = torch.tensor([0.5 + 1e-6, 0.0, 0.0], dtype=points.dtype)  # rounding: clamped onto the face
    assert (0, 15, 8, 8) in {tuple(c) for c in occupancy_targets(slightly, resolutions=(16,)).levels[0].tolist()}
    with pytest.raises(ValueError, match="normalized"):
        occupancy_targets(points * 2, resolutions=(16,))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        SparseUNetDecoder(in_channels=3, channels=(4, 4, 4), resolution=10)
    with pytest.raises(ValueError, match="prune_threshold"):
        SparseUNetDecoder(in_channels=3, prune_threshold=1.5)
    for blocks in (-1, 1.5, True):
        with pytest.raises(ValueError, match="coarse_blocks"):
            SparseUNetDecoder(in_channels=3, coarse_blocks=blocks)
    model = SparseUNetDecoder(in_channels=3, channels=(4, 4), resolution=8)
    with pytest.raises(ValueError, match="features must be"):
        model(torch.zeros(1, 5, 3), torch.zeros(1, 5, 4))
    wrong = occupancy_targets(torch.zeros(1, 5, 3), resolutions=(16, 8))
    with pytest.raises(ValueError, match="resolutions"):
        model(torch.zeros(1, 5, 3), torch.zeros(1, 5, 3), targets=wrong)


def test_inference_pruning_can_be_changed_after_construction():
    """set_inference_pruning: the new floor and threshold decide what eval keeps (same as a decoder built with
    them); invalid pairs are refused and leave the decoder unchanged."""
    torch.manual_seed(0)
    kwargs = {"in_channels": 3, "channels": (4, 4), "resolution": 8}
    built = SparseUNetDecoder(**kwargs, voxel_floor=1.0, prune_threshold=0.9).eval()
    changed = SparseUNetDecoder(**kwargs).eval()
    changed.load_state_dict(built.state_dict())
    changed.set_inference_pruning(voxel_floor=1.0, prune_threshold=0.9)
    assert (changed.voxel_floor, changed.prune_threshold, changed.floors) == (1.0, 0.9, built.floors)
    points = torch.rand(2, 40, 3) - 0.5
    features = torch.randn(2, 40, 3)
    a, b = built(points, features), changed(points, features)
    assert torch.equal(a.points, b.points) and a.lengths.tolist() == b.lengths.tolist()
    for bad, message in (({"voxel_floor": 9.0, "prune_threshold": 0.5}, "voxel_floor must be in"),
                         ({"voxel_floor": 1.0, "prune_threshold": -0.1}, "prune_threshold is a probability")):
        with pytest.raises(ValueError, match=message):
            changed.set_inference_pruning(**bad)
        assert (changed.voxel_floor, changed.prune_threshold) == (1.0, 0.9)
