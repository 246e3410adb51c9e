"""Tests for pointstn.ops.bbox against per-cloud float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from pointstn.ops.bbox import (
    bbox,
    checked_lengths,
    longest_edge,
    normalize_to_unit,
    oriented_bbox,
    padding_mask,
)

ATOL = {torch.float32: 1e-6, torch.float64: 1e-12}
# OBB of a sampled box including its corners: trimesh's search over hull-face normals is exact there
OBB_EXACT_TOL = 1e-9


def ragged_batch(seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(4, 50, 3, generator=g, dtype=dtype) * torch.tensor([1.0, 2.0, 0.5], dtype=dtype)
    lengths = torch.tensor([50, 17, 1, 33])
    points[1, 17:] = 1e6  # padding far outside: must never leak into a box
    points[3, 33:] = -1e6
    return points, lengths


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bbox_matches_per_cloud_reference_values_and_gradients(dtype):
    points, lengths = ragged_batch(0, dtype)
    points.requires_grad_(True)
    box = bbox(points, lengths)
    for b, n in enumerate(lengths.tolist()):
        cloud = points[b, :n].detach()
        torch.testing.assert_close(box.min[b], cloud.min(0).values, rtol=0, atol=0)
        torch.testing.assert_close(box.max[b], cloud.max(0).values, rtol=0, atol=0)
        torch.testing.assert_close(
            box.center[b], (cloud.min(0).values + cloud.max(0).values) / 2, rtol=0, atol=ATOL[dtype]
        )
        torch.testing.assert_close(box.extents[b], cloud.max(0).values - cloud.min(0).values, rtol=0, atol=ATOL[dtype])
    w = torch.randn(4, 3, dtype=dtype, generator=torch.Generator().manual_seed(1))
    (box.extents * w).sum().backward()
    expected = torch.zeros_like(points)
    for b, n in enumerate(lengths.tolist()):
        cloud = points[b, :n].detach()
        for axis in range(3):
            expected[b, cloud[:, axis].argmax(), axis] += w[b, axis]
            expected[b, cloud[:, axis].argmin(), axis] -= w[b, axis]
    torch.testing.assert_close(points.grad, expected, rtol=0, atol=ATOL[dtype])
    assert torch.equal(box.extents[2], torch.zeros(3, dtype=dtype))  # a single point


def test_longest_edge_and_validation():
    points, lengths = ragged_batch(2)
    box = bbox(points, lengths)
    torch.testing.assert_close(longest_edge(points, lengths), box.extents.max(-1).values)
    assert longest_edge(points[:1]).shape == (1,)
    with pytest.raises(ValueError, match="empty"):
        bbox(points, torch.tensor([50, 0, 1, 3]))
    with pytest.raises(ValueError, match="lengths must lie"):
        bbox(points, torch.tensor([51, 1, 1, 1]))
    with pytest.raises(ValueError, match="integer"):
        checked_lengths(points, torch.ones(4))
    with pytest.raises(ValueError, match=r"\(B, P, 3\)"):
        bbox(points[..., :2])
    assert padding_mask(points, lengths).sum(1).tolist() == lengths.tolist()


def test_normalize_to_unit_is_the_normalized_canonical_frame():
    points, lengths = ragged_batch(3)
    points[2, 1:3] = torch.tensor([[0.5, 0.2, 0.1], [0.4, 0.3, 0.0]], dtype=torch.float64)
    lengths[2] = 3  # give cloud 2 a non-zero extent
    norm = normalize_to_unit(points, lengths)
    box = bbox(norm.points, lengths)
    torch.testing.assert_close(box.center, torch.zeros(4, 3, dtype=torch.float64), rtol=0, atol=ATOL[torch.float64])
    torch.testing.assert_close(
        box.extents.max(-1).values, torch.ones(4, dtype=torch.float64), rtol=0, atol=ATOL[torch.float64]
    )
    assert (box.min >= -0.5 - 1e-12).all() and (box.max <= 0.5 + 1e-12).all()
    torch.testing.assert_close(norm.scale, longest_edge(points, lengths))
    mask = padding_mask(points, lengths)
    torch.testing.assert_close(norm.denormalize(norm.points)[mask], points[mask], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="coincide"):
        normalize_to_unit(torch.ones(1, 5, 3))


def rotated_box_samples(seed: int, extents: np.ndarray, n: int = 3000, corners: bool = True):
    rng = np.random.default_rng(seed)
    face = rng.integers(0, 6, n)
    p = (rng.random((n, 3)) - 0.5) * extents
    axis = face // 2
    p[np.arange(n), axis] = np.where(face % 2 == 0, -0.5, 0.5) * extents[axis]
    if corners:
        signs = np.array(np.meshgrid([-0.5, 0.5], [-0.5, 0.5], [-0.5, 0.5])).reshape(3, -1).T
        p = np.concatenate([p, signs * extents])
    R = Rotation.random(random_state=seed).as_matrix()
    t = rng.normal(size=3)
    return p @ R.T + t, R, t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oriented_bbox_recovers_rotated_box(seed):
    extents = np.array([1.0, 0.6, 0.3])
    pts, R, t = rotated_box_samples(seed, extents)
    obb = oriented_bbox(torch.from_numpy(pts))
    assert obb.center.dtype == torch.float64 and obb.axes.shape == (3, 3) and obb.extents.shape == (3,)
    np.testing.assert_allclose(obb.extents.numpy(), extents, atol=OBB_EXACT_TOL)
    np.testing.assert_allclose(obb.center.numpy(), t, atol=OBB_EXACT_TOL)
    # axes match the box's axes (columns of R, in descending-extent order) up to sign
    np.testing.assert_allclose(np.abs(obb.axes.numpy().T @ R), np.eye(3), atol=1e-9)
    np.testing.assert_allclose(obb.axes.numpy().T @ obb.axes.numpy(), np.eye(3), atol=1e-12)
    assert np.linalg.det(obb.axes.numpy()) == pytest.approx(1.0, abs=1e-12)


def test_oriented_bbox_surface_samples_without_corners_and_containment():
    extents = np.array([0.8, 0.5, 0.2])
    pts, R, _ = rotated_box_samples(4, extents, n=4000, corners=False)
    obb = oriented_bbox(torch.from_numpy(pts).float())
    assert obb.extents.dtype == torch.float32
    assert (obb.extents.double().numpy() <= extents + 1e-5).all()
    assert (obb.extents.double().numpy() >= extents - 0.03).all()
    np.testing.assert_allclose(np.abs(obb.axes.double().numpy().T @ R), np.eye(3), atol=0.02)
    # much tighter than the axis-aligned box of the rotated cloud
    assert np.prod(obb.extents.double().numpy()) < 0.8 * np.prod(np.ptp(pts, axis=0))
    rng = np.random.default_rng(5)
    for cloud in [pts, rng.normal(size=(500, 3)) * [3.0, 1.0, 0.2], rng.random((7, 3))]:
        box = oriented_bbox(torch.from_numpy(cloud))
        local = box.to_local(torch.from_numpy(cloud))
        assert (local.abs() <= box.extents / 2 + 1e-9).all()
        assert (box.extents[:-1] >= box.extents[1:]).all()
        assert torch.linalg.det(box.axes).item() == pytest.approx(1.0, abs=1e-12)


def test_oriented_bbox_degenerate_inputs():
    rng = np.random.default_rng(6)
    direction = np.array([1.0, -2.0, 0.5]) / np.linalg.norm([1.0, -2.0, 0.5])
    line = np.outer(rng.random(40) * 3.0, direction) + 1.0
    R = Rotation.random(random_state=7).as_matrix()
    rect = np.c_[(rng.random((200, 2)) - 0.5) * [2.0, 1.0], np.zeros(200)]
    rect = np.concatenate([rect, [[-1, -0.5, 0], [1, -0.5, 0], [-1, 0.5, 0], [1, 0.5, 0]]]) @ R.T
    cases = {
        "single point": (np.array([[0.3, -0.2, 5.0]]), [0.0, 0.0, 0.0]),
        "coincident": (np.tile([[1.0, 2.0, 3.0]], (9, 1)), [0.0, 0.0, 0.0]),
        "two points": (np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]]), [5.0, 0.0, 0.0]),
        "line": (line, [np.ptp(line @ direction), 0.0, 0.0]),
        "rectangle": (rect, [2.0, 1.0, 0.0]),
    }
    for name, (cloud, expected) in cases.items():
        box = oriented_bbox(torch.from_numpy(cloud))
        np.testing.assert_allclose(box.extents.numpy(), expected, atol=1e-9, err_msg=name)
        assert torch.linalg.det(box.axes).item() == pytest.approx(1.0, abs=1e-12), name
        local = box.to_local(torch.from_numpy(cloud))
        assert (local.abs() <= box.extents / 2 + 1e-9).all(), name
    line_box = oriented_bbox(torch.from_numpy(line))
    assert abs(float(line_box.axes[:, 0].numpy() @ direction)) == pytest.approx(1.0, abs=1e-12)
    rect_box = oriented_bbox(torch.from_numpy(rect))
    assert abs(float(rect_box.axes[:, 2].numpy() @ R[:, 2])) == pytest.approx(1.0, abs=1e-9)  # plane normal
    with pytest.raises(ValueError, match="non-empty"):
        oriented_bbox(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="non-finite"):
        oriented_bbox(torch.tensor([[0.0, 0.0, float("inf")]]))
