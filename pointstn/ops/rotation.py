"""Rotations and similarity transforms.

Conventions (the same as PyTorch3D's functions of the same names where those exist):
- Rotation matrices act on column vectors: `p' = R @ p`; batched points `(B, P, 3)` are rows, so the
  code computes `points @ R.transpose(-1, -2)`.
- All rotations are active and right-handed: `R_z(a)` turns +x towards +y by `a` radians.
- 6D representation (Zhou et al., CVPR 2019, "On the Continuity of Rotation Representations in
  Neural Networks"): the first two ROWS of R, `d6 = [R[0, :], R[1, :]]`; Gram-Schmidt recovers R.
- Quaternions are (w, x, y, z) with w the real part.
- Axis-angle is the rotation vector `axis * angle` (radians).
- Camera frame: OpenCV (x right, y down, z forward), DESIGN.md section 2.
- Similarity transform T = (R, s, t), canonical -> camera: `p_cam = s * R @ p + t`, s > 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_AXES = "XYZ"


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) 6D rotation representation -> (..., 3, 3) rotation matrices (PyTorch3D convention).

    Gram-Schmidt on the two 3-vectors `a1 = d6[..., :3]`, `a2 = d6[..., 3:]`: row 0 is a1 normalized,
    row 1 is a2 minus its component along row 0, normalized, row 2 is row0 x row1. Differentiable;
    the inputs where a1 = 0 or a2 is parallel to a1 (a measure-zero set) give a non-rotation
    (normalization uses eps 1e-12 instead of dividing by zero).
    """
    if d6.shape[-1] != 6:
        raise ValueError(f"rotation_6d_to_matrix expects (..., 6); got {tuple(d6.shape)}")
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 6): the first two rows, flattened (PyTorch3D convention)."""
    _check_matrix(matrix, "matrix_to_rotation_6d")
    return matrix[..., :2, :].reshape(*matrix.shape[:-2], 6).clone()


def geodesic_angle(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3), (..., 3, 3) -> (...) angle in radians in [0, pi] of the rotation R1^T R2.

    Computed as `atan2(|vee(M - M^T)| / 2, (tr M - 1) / 2)` with M = R1^T R2, which is accurate over the
    whole range (unlike `arccos((tr M - 1) / 2)`, which loses half the digits near 0 and pi and has an
    infinite derivative there). Gradients are finite everywhere (at exactly M = I the subgradient 0
    is returned; the angle is not differentiable there). Slightly non-orthonormal inputs (network
    outputs) are tolerated: both terms stay bounded and the result stays in [0, pi].
    """
    _check_matrix(R1, "geodesic_angle")
    _check_matrix(R2, "geodesic_angle")
    M = R1.transpose(-1, -2) @ R2
    cos = 0.5 * (M.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
    skew = torch.stack((M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]), dim=-1)
    sq = (skew * skew).sum(-1)
    # |skew| with a finite gradient at 0: sqrt is evaluated on a safe value where sq == 0
    safe = torch.where(sq > 0, sq, torch.ones_like(sq))
    sin = torch.where(sq > 0, 0.5 * torch.sqrt(safe), torch.zeros_like(sq))
    return torch.atan2(sin, cos)


def quaternion_to_matrix(quaternions: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z), any non-zero norm -> (..., 3, 3) rotation matrices."""
    if quaternions.shape[-1] != 4:
        raise ValueError(f"quaternion_to_matrix expects (..., 4); got {tuple(quaternions.shape)}")
    w, x, y, z = torch.unbind(quaternions, dim=-1)
    two_s = 2.0 / (quaternions * quaternions).sum(-1)
    m = torch.stack(
        (
            1 - two_s * (y * y + z * z), two_s * (x * y - z * w), two_s * (x * z + y * w),
            two_s * (x * y + z * w), 1 - two_s * (x * x + z * z), two_s * (y * z - x * w),
            two_s * (x * z - y * w), two_s * (y * z + x * w), 1 - two_s * (x * x + y * y),
        ),
        dim=-1,
    )  # fmt: skip
    return m.reshape(*quaternions.shape[:-1], 3, 3)


def random_rotation(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(n, 3, 3) rotations drawn uniformly (Haar measure) from SO(3).

    A standard-normal 4-vector, normalized, is uniform on S^3; its rotation is uniform on SO(3).
    Deterministic given `generator` (sampled in float64 on the generator's device, then cast).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    gen_device = generator.device if generator is not None else "cpu"
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64, device=gen_device)
    norm = q.norm(dim=-1, keepdim=True)
    q = q / norm.clamp_min(1e-300)  # a zero 4-vector has probability 0; keep the output finite
    return quaternion_to_matrix(q).to(dtype=dtype, device=device if device is not None else gen_device)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors (axis * angle in radians) -> (..., 3, 3), Rodrigues' formula.

    `R = I + sinc(a) K + (1 - cos a) / a^2 K^2` with K the cross-product matrix of the rotation
    vector and `(1 - cos a) / a^2 = sinc(a / 2)^2 / 2` (no cancellation). sinc uses its Taylor series
    below a = 0.05 rad, so the function and its gradient are finite and accurate at and near 0 in
    float32 and float64.
    """
    if axis_angle.shape[-1] != 3:
        raise ValueError(f"axis_angle_to_matrix expects (..., 3); got {tuple(axis_angle.shape)}")
    sq = (axis_angle * axis_angle).sum(-1)
    sinc = _sinc_of_squared(sq)
    cosc = 0.5 * _sinc_of_squared(0.25 * sq) ** 2
    K = _cross_matrix(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sinc[..., None, None] * K + cosc[..., None, None] * (K @ K)


def rotation_from_euler(angles: torch.Tensor, *, convention: str = "ZYX") -> torch.Tensor:
    """(..., 3) Euler angles in radians -> (..., 3, 3), as PyTorch3D's `euler_angles_to_matrix`.

    `convention` is three letters from "XYZ" with no letter repeated consecutively (e.g. "ZYX" =
    yaw-pitch-roll, "ZXZ"). The result is `R_{c[0]}(angles[..., 0]) @ R_{c[1]}(angles[..., 1]) @
    R_{c[2]}(angles[..., 2])`: intrinsic rotations in the order given (equivalently extrinsic in
    reverse order), each an active right-handed rotation about a fixed axis.
    """
    if angles.shape[-1] != 3:
        raise ValueError(f"rotation_from_euler expects (..., 3) angles; got {tuple(angles.shape)}")
    conv = convention.upper()
    if len(conv) != 3 or any(c not in _AXES for c in conv) or conv[0] == conv[1] or conv[1] == conv[2]:
        raise ValueError(
            f"convention must be 3 letters from 'XYZ' without consecutive repeats (e.g. 'ZYX'); got {convention!r}"
        )
    mats = [_axis_rotation(axis, a) for axis, a in zip(conv, torch.unbind(angles, dim=-1))]
    return mats[0] @ mats[1] @ mats[2]


def eye_from_spherical(azimuth: torch.Tensor, elevation: torch.Tensor, distance: torch.Tensor | float) -> torch.Tensor:
    """(...), (...), (...) -> (..., 3) camera position around the origin of a +z-up world.

    `azimuth` is measured in the xy plane from +x towards +y; `elevation` from the xy plane towards
    +z (pi/2 = directly above, -pi/2 = directly below); radians; `distance` > 0 from the origin.
    """
    distance = torch.as_tensor(distance, dtype=azimuth.dtype, device=azimuth.device)
    ce = torch.cos(elevation)
    return distance[..., None] * torch.stack(
        (ce * torch.cos(azimuth), ce * torch.sin(azimuth), torch.sin(elevation)), dim=-1
    )


def look_at_rotation(
    eye: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    up: tuple[float, float, float] = (0.0, 0.0, 1.0),
    roll: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """World -> OpenCV camera rotation of a camera at `eye` looking at `target`.

    Args:
        eye: (..., 3) camera centres in world coordinates.
        target: (..., 3) points looked at (default: the world origin).
        up: world direction that appears "up" (towards -y) in the image; default +z.
        roll: (...) or scalar radians, turning the camera about its optical axis; positive roll turns
            the camera's x axis towards its y axis (the image content then appears turned
            counter-clockwise on screen, since image y points down).

    Returns:
        (..., 3, 3) `R_cam_from_world`, such that `p_cam = R @ (p_world - eye)`. Its ROWS are the
        camera's x (right), y (down) and z (forward) axes in world coordinates. For an object whose
        canonical frame is the world frame, the STN's similarity is (R, s=1, t=-R @ eye).

    When the viewing direction is (anti-)parallel to `up` (a camera straight above or below), the
    image "up" is undefined; then the world axis least aligned with the viewing direction stands in
    for `up`, so the result is a valid rotation, and `roll` still turns it.
    """
    if eye.shape[-1] != 3:
        raise ValueError(f"eye must be (..., 3); got {tuple(eye.shape)}")
    if target is None:
        target = torch.zeros_like(eye)
    forward = target - eye
    dist = forward.norm(dim=-1, keepdim=True)
    if (dist <= 0).any():
        raise ValueError("look_at_rotation: eye and target coincide, the viewing direction is undefined")
    forward = forward / dist
    up_t = torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(forward)
    right = torch.cross(forward, up_t, dim=-1)
    right_norm = right.norm(dim=-1, keepdim=True)
    degenerate = right_norm < 1e-6 * up_t.norm(dim=-1, keepdim=True)
    fallback_up = torch.eye(3, dtype=eye.dtype, device=eye.device)[forward.abs().argmin(dim=-1)]
    right_fb = torch.cross(forward, fallback_up, dim=-1)
    right = torch.where(degenerate, right_fb, right)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.cross(forward, right, dim=-1)
    R = torch.stack((right, down, forward), dim=-2)
    roll = torch.as_tensor(roll, dtype=eye.dtype, device=eye.device)
    if roll.ndim > 0 or roll.item() != 0.0:
        R_roll = _axis_rotation("Z", roll.expand(R.shape[:-2]))
        R = R_roll.transpose(-1, -2) @ R
    return R


def apply_similarity(points: torch.Tensor, R: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B, P, 3) points -> `s * R @ p + t` per batch element. Differentiable in all inputs.

    Args:
        points: (B, P, 3); padding rows are transformed like the rest (lengths are not needed).
        R: (B, 3, 3) rotations.
        s: (B,) scales, > 0.
        t: (B, 3) translations.
    """
    _check_similarity(points, R, s, t)
    return s[:, None, None] * (points @ R.transpose(-1, -2)) + t[:, None, :]


def apply_inverse_similarity(points: torch.Tensor, R: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Inverse of `apply_similarity`: (B, P, 3) -> `R^T @ (p - t) / s`. Same argument shapes."""
    _check_similarity(points, R, s, t)
    return ((points - t[:, None, :]) @ R) / s[:, None, None]


def _check_similarity(points: torch.Tensor, R: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> None:
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, P, 3); got {tuple(points.shape)}")
    B = points.shape[0]
    for name, x, shape in (("R", R, (B, 3, 3)), ("s", s, (B,)), ("t", t, (B, 3))):
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must be {shape} for points {tuple(points.shape)}; got {tuple(x.shape)}")
    if (s <= 0).any():
        raise ValueError(f"similarity scales must be > 0; got min {s.min().item()}")


def _check_matrix(m: torch.Tensor, name: str) -> None:
    if m.ndim < 2 or m.shape[-2:] != (3, 3):
        raise ValueError(f"{name} expects (..., 3, 3) matrices; got {tuple(m.shape)}")


def _sinc_of_squared(sq: torch.Tensor) -> torch.Tensor:
    """sin(a) / a as a function of sq = a^2, with a series below a = 0.05 (truncation < 1e-16)."""
    small = sq < 2.5e-3
    angle = torch.sqrt(torch.where(small, torch.ones_like(sq), sq))
    series = 1.0 - sq / 6.0 * (1.0 - sq / 20.0 * (1.0 - sq / 42.0))
    return torch.where(small, series, torch.sin(angle) / angle)


def _cross_matrix(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) K with K @ w = v x w."""
    x, y, z = torch.unbind(v, dim=-1)
    o = torch.zeros_like(x)
    return torch.stack((o, -z, y, z, o, -x, -y, x, o), dim=-1).reshape(*v.shape[:-1], 3, 3)


def _axis_rotation(axis: str, angle: torch.Tensor) -> torch.Tensor:
    """(...) angles -> (..., 3, 3) active right-handed rotation about the world axis 'X'|'Y'|'Z'."""
    c, s = torch.cos(angle), torch.sin(angle)
    o, i = torch.zeros_like(angle), torch.ones_like(angle)
    if axis == "X":
        flat = (i, o, o, o, c, -s, o, s, c)
    elif axis == "Y":
        flat = (c, o, s, o, i, o, -s, o, c)
    else:
        flat = (c, -s, o, s, c, o, o, o, i)
    return torch.stack(flat, dim=-1).reshape(*angle.shape, 3, 3)
