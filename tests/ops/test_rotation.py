"""Tests for pointstn.ops.rotation against scipy / numpy float64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from scipy.stats import kstest

from pointstn.ops.rotation import (
    apply_inverse_similarity,
    apply_similarity,
    axis_angle_to_matrix,
    eye_from_spherical,
    geodesic_angle,
    look_at_rotation,
    matrix_to_rotation_6d,
    quaternion_to_matrix,
    random_rotation,
    rotation_6d_to_matrix,
    rotation_from_euler,
)

ATOL = {torch.float32: 2e-6, torch.float64: 1e-12}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_rotation(R: torch.Tensor) -> None:
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, rtol=0, atol=ATOL[R.dtype])
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(R.shape[:-2], dtype=R.dtype), rtol=0, atol=ATOL[R.dtype])


def gram_schmidt_reference(d6: np.ndarray) -> np.ndarray:
    a1, a2 = d6[:3], d6[3:]
    b1 = a1 / np.linalg.norm(a1)
    b2 = a2 - b1.dot(a2) * b1
    b2 /= np.linalg.norm(b2)
    return np.stack([b1, b2, np.cross(b1, b2)])  # rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rotation_6d_to_matrix_matches_gram_schmidt(dtype):
    d6 = torch.randn(4, 5, 6, generator=gen(0), dtype=torch.float64)
    R = rotation_6d_to_matrix(d6.to(dtype))
    assert R.shape == (4, 5, 3, 3) and R.dtype == dtype
    assert_rotation(R)
    ref = np.stack([gram_schmidt_reference(v) for v in d6.reshape(-1, 6).numpy()]).reshape(4, 5, 3, 3)
    torch.testing.assert_close(R, torch.from_numpy(ref).to(dtype), rtol=0, atol=ATOL[dtype] * 10)


def test_rotation_6d_round_trips_and_pytorch3d_layout():
    R = random_rotation(100, generator=gen(1), dtype=torch.float64)
    d6 = matrix_to_rotation_6d(R)
    assert torch.equal(d6, torch.cat([R[:, 0, :], R[:, 1, :]], dim=-1))  # first two ROWS
    torch.testing.assert_close(rotation_6d_to_matrix(d6), R, rtol=0, atol=ATOL[torch.float64])
    # 6D -> R -> 6D returns the Gram-Schmidt-normalized input: idempotent
    d6_raw = torch.randn(100, 6, generator=gen(2), dtype=torch.float64)
    once = matrix_to_rotation_6d(rotation_6d_to_matrix(d6_raw))
    torch.testing.assert_close(
        matrix_to_rotation_6d(rotation_6d_to_matrix(once)), once, rtol=0, atol=ATOL[torch.float64]
    )
    identity_6d = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    assert torch.equal(rotation_6d_to_matrix(identity_6d), torch.eye(3, dtype=torch.float64))


def test_rotation_6d_gradcheck():
    d6 = torch.randn(6, 6, generator=gen(3), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rotation_6d_to_matrix, (d6,))


def test_geodesic_matches_arccos_reference_on_random_pairs():
    R1 = random_rotation(500, generator=gen(4), dtype=torch.float64)
    R2 = random_rotation(500, generator=gen(5), dtype=torch.float64)
    got = geodesic_angle(R1, R2)
    ref = [np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1, 1)) for a, b in zip(R1.numpy(), R2.numpy())]
    ref = torch.tensor(ref, dtype=torch.float64)
    mid = (ref > 1e-3) & (ref < math.pi - 1e-3)  # where arccos itself is accurate
    torch.testing.assert_close(got[mid], ref[mid], rtol=0, atol=1e-10)
    torch.testing.assert_close(geodesic_angle(R2, R1), got, rtol=0, atol=ATOL[torch.float64])
    Q = random_rotation(500, generator=gen(6), dtype=torch.float64)
    torch.testing.assert_close(geodesic_angle(Q @ R1, Q @ R2), got, rtol=0, atol=1e-10)


KNOWN_ANGLES = [0.0, 1e-9, 1e-6, 1e-3, 0.5, 1.0, 2.0, 3.0, math.pi - 1e-3, math.pi - 1e-6, math.pi]
KNOWN_ATOL = {torch.float32: 1e-6, torch.float64: 1e-14}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_geodesic_known_angles_including_near_zero_and_pi(dtype):
    axis = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    axis = axis / axis.norm()
    angles = torch.tensor(KNOWN_ANGLES, dtype=torch.float64)
    R = torch.from_numpy(Rotation.from_rotvec((angles[:, None] * axis).numpy()).as_matrix()).to(dtype)
    Q = torch.from_numpy(Rotation.random(random_state=0).as_matrix()).to(dtype).expand_as(R)
    got = geodesic_angle(Q, Q @ R)
    assert got.dtype == dtype
    tol = KNOWN_ATOL[dtype] * (10 if dtype == torch.float64 else 1)
    torch.testing.assert_close(got.double(), angles, rtol=0, atol=tol)
    exact_small = geodesic_angle(torch.eye(3, dtype=dtype), R[:4])
    # exact inputs: tiny angles are resolved to relative precision (arccos would return 0 or ~3e-4)
    torch.testing.assert_close(exact_small.double(), angles[:4], rtol=1e-6, atol=0)


def test_geodesic_gradients_are_finite_and_correct_near_zero_and_pi():
    axis = torch.tensor([0.0, 0.6, 0.8], dtype=torch.float64)
    for theta0 in [1e-8, 1e-4, 0.7, 2.5, math.pi - 1e-4, math.pi - 1e-7]:
        theta = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
        angle = geodesic_angle(torch.eye(3, dtype=torch.float64), axis_angle_to_matrix(theta * axis))
        (grad,) = torch.autograd.grad(angle, theta)
        assert grad.item() == pytest.approx(1.0, abs=1e-6), theta0  # d angle / d theta = 1 inside (0, pi)
    R = torch.eye(3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(geodesic_angle(R, torch.eye(3, dtype=torch.float64)), R)
    assert torch.isfinite(g).all()
    # w.r.t. free 3x3 matrices, close to both ends (finite differences need the step << the distance)
    R2 = random_rotation(3, generator=gen(7), dtype=torch.float64)
    for angle in [1e-3, math.pi - 1e-3]:
        offset = axis_angle_to_matrix(angle * axis.expand(3, 3))
        near = (R2 @ offset).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda a: geodesic_angle(R2, a), (near,)), angle


def test_random_rotation_is_uniform_and_deterministic():
    R = random_rotation(20000, generator=gen(8), dtype=torch.float64)
    assert_rotation(R)
    assert torch.equal(R, random_rotation(20000, generator=gen(8), dtype=torch.float64))
    assert random_rotation(4, generator=gen(8)).dtype == torch.float32
    # Haar measure: rotation angle has CDF (t - sin t) / pi; the mean matrix is 0
    angles = geodesic_angle(torch.eye(3, dtype=torch.float64), R).numpy()
    assert kstest(angles, lambda t: (t - np.sin(t)) / np.pi).pvalue > 0.01
    assert R.mean(0).abs().max() < 0.02
    # a biased sampler (small angles only) fails the same test
    biased = axis_angle_to_matrix(0.5 * torch.randn(20000, 3, generator=gen(9), dtype=torch.float64))
    b_angles = geodesic_angle(torch.eye(3, dtype=torch.float64), biased).numpy()
    assert kstest(b_angles, lambda t: (t - np.sin(t)) / np.pi).pvalue < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_axis_angle_to_matrix_matches_scipy(dtype):
    g = gen(10)
    directions = torch.randn(60, 3, generator=g, dtype=torch.float64)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    mags = torch.cat([torch.zeros(1), torch.logspace(-9, 0.49, 59, dtype=torch.float64)])  # up to ~3.1
    rotvec = directions * mags[:, None]
    got = axis_angle_to_matrix(rotvec.to(dtype))
    ref = torch.from_numpy(Rotation.from_rotvec(rotvec.numpy()).as_matrix()).to(dtype)
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL[dtype])
    assert_rotation(got)


def test_axis_angle_gradcheck_including_series_branch():
    for scale in [0.0, 1e-4, 0.04, 0.06, 2.0]:
        v = (scale * torch.randn(4, 3, generator=gen(11), dtype=torch.float64)).requires_grad_(True)
        assert torch.autograd.gradcheck(axis_angle_to_matrix, (v,)), scale


def test_quaternion_to_matrix_matches_scipy():
    q = torch.randn(50, 4, generator=gen(12), dtype=torch.float64) * 3
    ref = Rotation.from_quat(q[:, [1, 2, 3, 0]].numpy()).as_matrix()  # scipy is (x, y, z, w)
    torch.testing.assert_close(quaternion_to_matrix(q), torch.from_numpy(ref), rtol=0, atol=ATOL[torch.float64])


@pytest.mark.parametrize("convention", ["ZYX", "XYZ", "ZXZ", "YXY"])
def test_rotation_from_euler_matches_scipy_intrinsic(convention):
    angles = (torch.rand(30, 3, generator=gen(13), dtype=torch.float64) * 2 - 1) * math.pi
    ref = Rotation.from_euler(convention, angles.numpy()).as_matrix()  # uppercase = intrinsic
    torch.testing.assert_close(
        rotation_from_euler(angles, convention=convention), torch.from_numpy(ref), rtol=0, atol=ATOL[torch.float64]
    )
    for bad in ["ZZX", "XY", "ABC"]:
        with pytest.raises(ValueError, match="convention"):
            rotation_from_euler(angles, convention=bad)


def test_look_at_rotation_known_pose_and_properties():
    R = look_at_rotation(torch.tensor([0.0, -2.0, 0.0], dtype=torch.float64))
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(R, expected, rtol=0, atol=ATOL[torch.float64])
    g = gen(14)
    eye = torch.randn(200, 3, generator=g, dtype=torch.float64) * 3
    target = torch.randn(200, 3, generator=g, dtype=torch.float64) * 0.2
    R = look_at_rotation(eye, target)
    assert_rotation(R)
    p_cam = ((target - eye)[:, None, :] @ R.transpose(-1, -2))[:, 0]
    torch.testing.assert_close(p_cam[:, :2], torch.zeros(200, 2, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(p_cam[:, 2], (target - eye).norm(dim=-1))  # target straight ahead
    up_cam = R @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert (up_cam[:, 1] < 0).all() and up_cam[:, 0].abs().max() < 1e-12  # +z looks up (-y), no roll


def test_look_at_rotation_poles_and_roll():
    eyes = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, -3.0], [1e-9, 0.0, 2.0]], dtype=torch.float64)
    R = look_at_rotation(eyes)
    assert_rotation(R)
    torch.testing.assert_close(R[:, 2], -eyes / eyes.norm(dim=-1, keepdim=True), rtol=0, atol=1e-9)
    eye = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    base = look_at_rotation(eye)
    rolled = look_at_rotation(eye, roll=math.pi / 2)
    torch.testing.assert_close(rolled[0, 0], base[0, 1], rtol=0, atol=ATOL[torch.float64])  # x turned onto y
    torch.testing.assert_close(rolled[0, 2], base[0, 2], rtol=0, atol=ATOL[torch.float64])
    rolls = torch.tensor([0.3], dtype=torch.float64)
    angle = geodesic_angle(base, look_at_rotation(eye, roll=rolls))
    torch.testing.assert_close(angle, rolls, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="coincide"):
        look_at_rotation(eye, eye)


def test_eye_from_spherical():
    az = torch.tensor([0.0, math.pi / 2, 0.3, 0.0], dtype=torch.float64)
    el = torch.tensor([0.0, 0.0, math.pi / 2, -0.4], dtype=torch.float64)
    eye = eye_from_spherical(az, el, 2.0)
    ref = torch.tensor(
        [[2, 0, 0], [0, 2, 0], [0, 0, 2], [2 * math.cos(0.4), 0, -2 * math.sin(0.4)]], dtype=torch.float64
    )
    torch.testing.assert_close(eye, ref, rtol=0, atol=ATOL[torch.float64])


def similarity_inputs(seed: int, B: int = 3, P: int = 7):
    g = gen(seed)
    points = torch.randn(B, P, 3, generator=g, dtype=torch.float64)
    R = random_rotation(B, generator=g, dtype=torch.float64)
    s = torch.rand(B, generator=g, dtype=torch.float64) + 0.5
    t = torch.randn(B, 3, generator=g, dtype=torch.float64)
    return points, R, s, t


def test_apply_similarity_matches_loop_and_inverts():
    points, R, s, t = similarity_inputs(15)
    got = apply_similarity(points, R, s, t)
    ref = torch.stack([torch.stack([s[b] * (R[b] @ p) + t[b] for p in points[b]]) for b in range(3)])
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL[torch.float64])
    torch.testing.assert_close(apply_inverse_similarity(got, R, s, t), points, rtol=0, atol=ATOL[torch.float64])
    torch.testing.assert_close(
        apply_similarity(apply_inverse_similarity(points, R, s, t), R, s, t), points, rtol=0, atol=ATOL[torch.float64]
    )


def test_apply_similarity_gradcheck_and_validation():
    inputs = tuple(x.requires_grad_(True) for x in similarity_inputs(16, B=2, P=4))
    assert torch.autograd.gradcheck(apply_similarity, inputs)
    assert torch.autograd.gradcheck(apply_inverse_similarity, inputs)
    points, R, s, t = similarity_inputs(17)
    with pytest.raises(ValueError, match="scales must be > 0"):
        apply_similarity(points, R, -s, t)
    with pytest.raises(ValueError, match="R must be"):
        apply_similarity(points, R[:2], s, t)
