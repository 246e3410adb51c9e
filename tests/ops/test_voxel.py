"""Tests for pointstn.ops.voxel against slow per-point Python references (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pointstn.ops.voxel import (
    delinearize_keys,
    dense_to_occupancy,
    downsample_coords,
    index_add_rows,
    is_occupied,
    linearize_coords,
    occupancy,
    occupancy_pyramid,
    occupancy_to_dense,
    packed_to_padded,
    points_from_offsets,
    voxel_centers,
    voxelize,
)

ATOL = {torch.float32: 1e-6, torch.float64: 1e-12}


def random_batch(seed: int, *, B: int = 3, P: int = 400, C: int = 5, spread: float = 0.6, dtype=torch.float64):
    """Points partly outside [-0.5, 0.5]^3 (spread > 0.5), ragged lengths, garbage padding."""
    g = torch.Generator().manual_seed(seed)
    points = (torch.rand(B, P, 3, generator=g, dtype=dtype) * 2 - 1) * spread
    features = torch.randn(B, P, C, generator=g, dtype=dtype)
    lengths = torch.randint(P // 2, P + 1, (B,), generator=g)
    lengths[0] = P
    return points, features, lengths


def reference_voxelize(points, features, lengths, resolution, lo, hi):
    """Per-point loop with a dict: {(b, i, j, k): [point indices]}."""
    size = (hi - lo) / resolution
    cells: dict[tuple[int, int, int, int], list[tuple[int, int]]] = {}
    outside = [0] * points.shape[0]
    for b in range(points.shape[0]):
        for p in range(int(lengths[b])):
            xyz = [float(v) for v in points[b, p]]
            if not all(lo <= v <= hi for v in xyz):
                outside[b] += 1
                continue
            ijk = tuple(min(math.floor((v - lo) / size), resolution - 1) for v in xyz)
            cells.setdefault((b, *ijk), []).append((b, p))
    keys = sorted(cells)
    coords = torch.tensor(keys, dtype=torch.int32).reshape(-1, 4)
    counts = torch.tensor([len(cells[k]) for k in keys], dtype=torch.int64)
    feats = None
    if features is not None:
        feats = torch.stack([torch.stack([features[b, p] for b, p in cells[k]]).mean(0) for k in keys])
    owner = {bp: row for row, k in enumerate(keys) for bp in cells[k]}
    p2v = torch.full(points.shape[:2], -1, dtype=torch.int64)
    for (b, p), row in owner.items():
        p2v[b, p] = row
    return coords, feats, counts, p2v, torch.tensor(outside)


@pytest.mark.parametrize("seed,resolution,lo,hi", [(0, 8, -0.5, 0.5), (1, 5, -0.5, 0.5), (2, 16, -0.3, 0.7)])
def test_voxelize_matches_dict_reference(seed, resolution, lo, hi):
    points, features, lengths = random_batch(seed)
    vox = voxelize(points, features, lengths, resolution=resolution, lo=lo, hi=hi)
    coords, feats, counts, p2v, outside = reference_voxelize(points, features, lengths, resolution, lo, hi)
    assert vox.coords.dtype == torch.int32 and vox.coords.shape == coords.shape
    assert torch.equal(vox.coords, coords)
    assert torch.equal(vox.counts, counts)
    assert torch.equal(vox.point_to_voxel, p2v)
    assert torch.equal(vox.num_outside, outside) and outside.sum() > 0  # the case is exercised
    torch.testing.assert_close(vox.features, feats, rtol=0, atol=ATOL[torch.float64])
    assert vox.voxel_size == pytest.approx((hi - lo) / resolution)
    assert vox.batch_size == 3 and vox.resolution == resolution


def test_voxelize_feature_gradient_matches_reference():
    points, features, lengths = random_batch(3, P=60, C=3)
    features.requires_grad_(True)
    vox = voxelize(points, features, lengths, resolution=4)
    weights = torch.randn_like(vox.features)
    (vox.features * weights).sum().backward()
    # d/d f_p of sum_v w_v * mean_{q in v} f_q = w_{v(p)} / count_{v(p)}; 0 for padding and outside points
    expected = torch.zeros_like(features)
    for b in range(points.shape[0]):
        for p in range(points.shape[1]):
            row = int(vox.point_to_voxel[b, p])
            if row >= 0:
                expected[b, p] = weights[row] / vox.counts[row]
    torch.testing.assert_close(features.grad, expected, rtol=0, atol=ATOL[torch.float64])
    f64 = features.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: voxelize(points, f, lengths, resolution=4).features, (f64,))


def test_voxelize_boundaries_padding_and_non_finite():
    hi_minus = math.nextafter(0.5, 0.0)
    pts = torch.tensor(
        [[[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5], [hi_minus, 0.0, 0.0], [0.5 + 1e-9, 0.0, 0.0],
          [float("nan"), 0.0, 0.0], [0.0, 0.0, 0.0], [0.1, 0.1, 0.1]]],
        dtype=torch.float64,
    )  # fmt: skip
    vox = voxelize(pts, None, torch.tensor([6]), resolution=4)
    assert vox.features is None
    assert vox.point_to_voxel[0, 3:5].tolist() == [-1, -1] and vox.point_to_voxel[0, 6] == -1  # outside, NaN, padding
    assert vox.num_outside.tolist() == [2]
    cells = vox.coords[vox.point_to_voxel[0, [0, 1, 2, 5]]]
    assert cells.tolist() == [[0, 0, 0, 0], [0, 3, 3, 3], [0, 3, 2, 2], [0, 2, 2, 2]]
    with pytest.raises(ValueError, match="lengths"):
        voxelize(pts, None, torch.tensor([8]), resolution=4)
    with pytest.raises(ValueError, match="resolution"):
        voxelize(pts, None, resolution=0)
    with pytest.raises(ValueError, match="features"):
        voxelize(pts, torch.zeros(1, 6, 2), resolution=4)


def test_voxelize_float32_and_every_point_in_its_voxel():
    points, features, lengths = random_batch(4, dtype=torch.float32, spread=0.5)
    vox = voxelize(points, features, lengths, resolution=7)
    assert vox.features.dtype == torch.float32
    mask = vox.point_to_voxel >= 0
    centres = voxel_centers(vox.coords, resolution=7, dtype=torch.float32)[vox.point_to_voxel[mask]]
    assert ((points[mask] - centres).abs() <= vox.voxel_size / 2 + ATOL[torch.float32]).all()
    batch_of_point = torch.arange(3)[:, None].expand(3, points.shape[1])[mask]
    assert torch.equal(vox.coords[vox.point_to_voxel[mask], 0].long(), batch_of_point)
    assert vox.counts.sum() == mask.sum()


def test_voxel_centers_and_points_from_offsets():
    g = torch.Generator().manual_seed(5)
    coords = torch.cat([torch.randint(0, 2, (50, 1), generator=g), torch.randint(0, 6, (50, 3), generator=g)], 1).int()
    lo, hi, R = -0.2, 1.0, 6
    size = (hi - lo) / R
    centres = voxel_centers(coords, resolution=R, lo=lo, hi=hi, dtype=torch.float64)
    ref = torch.tensor([[lo + (int(c) + 0.5) * size for c in row[1:]] for row in coords], dtype=torch.float64)
    torch.testing.assert_close(centres, ref, rtol=0, atol=ATOL[torch.float64])
    offsets = (torch.rand(50, 4, 3, generator=g, dtype=torch.float64) - 0.5).requires_grad_(True)
    pts = points_from_offsets(coords, offsets, resolution=R, lo=lo, hi=hi)
    assert pts.shape == (50, 4, 3)
    torch.testing.assert_close(pts, ref[:, None] + offsets * size, rtol=0, atol=ATOL[torch.float64])
    pts.sum().backward()
    torch.testing.assert_close(offsets.grad, torch.full_like(offsets, size))
    # offsets in [-0.5, 0.5] stay in their voxel
    back = voxelize(pts.detach().reshape(1, -1, 3), None, resolution=R, lo=lo, hi=hi)
    assert torch.equal(back.coords[back.point_to_voxel[0], 1:], coords[:, 1:].repeat_interleave(4, 0))


@pytest.mark.parametrize("grouped", [False, True])
def test_packed_to_padded_matches_loop_and_gradient(grouped):
    g = torch.Generator().manual_seed(6)
    values = torch.randn(40, 3, generator=g, dtype=torch.float64, requires_grad=True)
    batch = torch.randint(0, 4, (40,), generator=g)
    batch[batch == 2] = 3  # element 2 is empty
    if grouped:  # rows already grouped by element (the point head's case): no sort needed
        batch = batch.sort().values
    padded, lengths = packed_to_padded(values, batch, 5, pad_value=-7.0)
    rows = [values[batch == b] for b in range(5)]
    assert lengths.tolist() == [len(r) for r in rows] and padded.shape == (5, max(lengths.tolist()), 3)
    for b, r in enumerate(rows):
        torch.testing.assert_close(padded[b, : len(r)], r)
        assert (padded[b, len(r) :] == -7.0).all()
    w = torch.randn_like(padded)
    (padded * w).sum().backward()
    expected = torch.stack([w[b, (batch[:i] == b).sum()] for i, b in enumerate(batch.tolist())])
    torch.testing.assert_close(values.grad, expected)
    with pytest.raises(ValueError, match="batch_index"):
        packed_to_padded(values, batch, 3)


def test_keys_round_trip_and_order():
    g = torch.Generator().manual_seed(7)
    coords = torch.cat([torch.randint(0, 5, (300, 1), generator=g), torch.randint(0, 9, (300, 3), generator=g)], 1)
    keys = linearize_coords(coords, resolution=9)
    assert torch.equal(delinearize_keys(keys, resolution=9), coords.int())
    lexi = sorted(map(tuple, coords.tolist()))
    assert delinearize_keys(keys.sort().values, resolution=9).tolist() == [list(c) for c in lexi]
    # a (D, H, W) grid: the row of each site in the flattened (B, D, H, W) grid, and back
    shape = (3, 7, 4)
    coords = torch.stack([torch.randint(0, n, (300,), generator=g) for n in (5, *shape)], 1)
    keys = linearize_coords(coords, resolution=shape)
    flat = torch.arange(5 * 3 * 7 * 4).view(5, *shape)
    assert torch.equal(keys, flat[tuple(coords.T)])
    assert torch.equal(delinearize_keys(keys, resolution=shape), coords.int())


def test_occupancy_pyramid_matches_direct_occupancy_and_max_pool():
    points, _, lengths = random_batch(8, P=2000, spread=0.5)
    pyramid = occupancy_pyramid(points, lengths, resolutions=(32, 16, 8, 4, 1))
    ref_fine, _, _, _, _ = reference_voxelize(points, None, lengths, 32, -0.5, 0.5)
    assert torch.equal(pyramid.levels[0], ref_fine)
    for level, R in enumerate(pyramid.resolutions):
        # power-of-two grids on [-0.5, 0.5]: direct voxelization is exact at every level
        assert torch.equal(pyramid.levels[level], occupancy(points, lengths, resolution=R))
        dense = pyramid.dense(level)
        assert dense.shape == (3, R, R, R) and dense.dtype == torch.bool
        assert torch.equal(dense_to_occupancy(dense), pyramid.levels[level])
        if level:
            factor = pyramid.resolutions[level - 1] // R
            pooled = F.max_pool3d(pyramid.dense(level - 1).float(), kernel_size=factor) > 0
            assert torch.equal(dense, pooled)  # coarse occupied iff a child is occupied


def test_occupancy_pyramid_non_dyadic_consistency_and_validation():
    points, _, lengths = random_batch(9, P=500, spread=0.5)
    pyramid = occupancy_pyramid(points, lengths, resolutions=(36, 12, 6))
    for level, f in enumerate((3, 2)):
        fine, coarse, R = pyramid.levels[level], pyramid.levels[level + 1], pyramid.resolutions[level + 1]
        parents = downsample_coords(fine, factor=f)
        assert torch.equal(parents, coarse)
        # every fine voxel's parent is occupied, and every coarse voxel has an occupied child
        parent_of_each = fine.clone()
        parent_of_each[:, 1:] //= f
        assert is_occupied(parent_of_each, coarse, resolution=R).all()
        assert torch.isin(linearize_coords(coarse, resolution=R), linearize_coords(parent_of_each, resolution=R)).all()
    for bad in [(32, 24), (16, 16), (8, 16), ()]:
        with pytest.raises(ValueError, match="resolutions"):
            occupancy_pyramid(points, lengths, resolutions=bad)
    wide, _, _ = random_batch(9, spread=0.7)
    with pytest.raises(ValueError, match="outside the grid"):
        occupancy(wide, resolution=8)
    assert occupancy(wide, resolution=8, allow_outside=True).shape[1] == 4


def test_is_occupied_matches_set_reference_and_rejects_aliasing():
    g = torch.Generator().manual_seed(10)
    R = 6
    target = torch.unique(
        torch.cat([torch.randint(0, 3, (80, 1), generator=g), torch.randint(0, R, (80, 3), generator=g)], 1), dim=0
    )
    query = torch.cat([torch.randint(0, 3, (500, 1), generator=g), torch.randint(-1, R + 1, (500, 3), generator=g)], 1)
    target_set = set(map(tuple, target.tolist()))
    expected = torch.tensor([tuple(q) in target_set for q in query.tolist()])
    got = is_occupied(query, target, resolution=R)
    assert got.dtype == torch.bool and torch.equal(got, expected) and expected.any()
    # (0, 1, 2, R) would linearize to the key of (0, 1, 3, 0): it must not count as occupied
    alias_target = torch.tensor([[0, 0, 0, 0], [0, 1, 3, 0]])
    queries = torch.tensor([[0, 1, 2, R], [0, 1, 3, 0], [0, -1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 0]])
    assert is_occupied(queries, alias_target, resolution=R).tolist() == [False, True, False, False, True]
    with pytest.raises(ValueError, match="target out of range"):
        is_occupied(query, torch.tensor([[0, 0, 0, R]]), resolution=R)


def test_occupancy_to_dense_matches_loop():
    g = torch.Generator().manual_seed(11)
    coords = torch.cat([torch.randint(0, 2, (30, 1), generator=g), torch.randint(0, 5, (30, 3), generator=g)], 1).int()
    dense = occupancy_to_dense(coords, batch_size=2, resolution=5)
    ref = torch.zeros(2, 5, 5, 5, dtype=torch.bool)
    for b, i, j, k in coords.tolist():
        ref[b, i, j, k] = True
    assert torch.equal(dense, ref)
    with pytest.raises(ValueError, match="out of range"):
        occupancy_to_dense(coords, batch_size=1, resolution=5)


@pytest.mark.parametrize("threads", [1, 2])
def test_index_add_rows_is_index_add_keeping_only_the_index(threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(9)
        base = torch.randn(300, 16, generator=g, requires_grad=True)
        source = torch.randn(20000, 16, generator=g, requires_grad=True)
        index = torch.randint(0, 300, (20000,), generator=g)
        grad = torch.randn(300, 16, generator=g)
        expected = base.index_add(0, index, source * 1.0)
        want = torch.autograd.grad(expected, (base, source), grad)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
            got = index_add_rows(base, index, source * 1.0)
        assert saved == [index.shape]  # the (20000, 16) rows are not kept
        assert torch.equal(got, expected)
        assert all(torch.equal(got, index_add_rows(base, index, source)) for _ in range(5))  # deterministic
        for a, b in zip(torch.autograd.grad(got, (base, source), grad), want):
            assert torch.equal(a, b)
    finally:
        torch.set_num_threads(previous)
