"""Closed triangle meshes lofted through rings of vertices: revolved profiles and swept tubes.

All three builders produce watertight, outward-wound meshes by construction: consecutive rings are
joined by quads split into two triangles, and open ends are closed by a fan around one extra vertex
(a pole). With ring index i and in-ring index k, the winding follows dS/di x dS/dk, so callers
order their rings so that this cross product points out of the solid.
"""

from __future__ import annotations

import numpy as np


def loft(
    *, rings: np.ndarray, start_pole: np.ndarray | None, end_pole: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Join rings of vertices into a closed mesh.

    Args:
        rings: (M, N, 3) float64, M rings of N vertices each, in matching order.
        start_pole: (3,) vertex closing the first ring with a fan, or None.
        end_pole: (3,) vertex closing the last ring with a fan, or None. With both poles None the
            last ring is joined back to the first (a closed tube, e.g. a torus).

    Returns:
        vertices (V, 3) float64 and faces (F, 3) int64. Faces are wound along dS/di x dS/dk.
    """
    rings = np.asarray(rings, dtype=np.float64)
    if rings.ndim != 3 or rings.shape[2] != 3 or rings.shape[1] < 3:
        raise ValueError(f"rings must be (M, N>=3, 3), got {rings.shape}")
    if (start_pole is None) != (end_pole is None):
        raise ValueError("give both poles (a capped tube) or neither (a closed ring of rings)")
    m, n, _ = rings.shape
    cyclic = start_pole is None
    if cyclic and m < 3:
        raise ValueError(f"a closed ring of rings needs at least 3 rings, got {m}")
    offset = 0 if cyclic else 1
    ring_ids = offset + np.arange(m * n, dtype=np.int64).reshape(m, n)
    k0 = np.arange(n)
    k1 = (k0 + 1) % n

    faces = []
    pairs = m if cyclic else m - 1
    for i in range(pairs):
        a, b = ring_ids[i], ring_ids[(i + 1) % m]
        faces.append(np.stack([a[k0], b[k0], b[k1]], axis=1))
        faces.append(np.stack([a[k0], b[k1], a[k1]], axis=1))
    parts = [rings.reshape(-1, 3)]
    if not cyclic:
        first, last = ring_ids[0], ring_ids[-1]
        top = offset + m * n
        faces.insert(0, np.stack([np.zeros(n, dtype=np.int64), first[k0], first[k1]], axis=1))
        faces.append(np.stack([last[k0], np.full(n, top, dtype=np.int64), last[k1]], axis=1))
        parts = [np.asarray(start_pole, dtype=np.float64)[None], parts[0], np.asarray(end_pole, dtype=np.float64)[None]]
    return np.concatenate(parts, axis=0), np.concatenate(faces, axis=0).astype(np.int64)


def revolve_profile(*, profile: np.ndarray, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Revolve a planar profile (rho, z) around the z axis into a closed mesh.

    The profile is either open, starting and ending on the axis (rho == 0 exactly at both ends and
    rho > 0 in between: a body of revolution without a hole), or closed (all rho > 0, the last point
    joined back to the first: a torus-like ring). It must be a simple polygon (together with the
    axis segment when open); either orientation is accepted.

    With vertices at angles 2 pi j / segments, every quad between two profile points is a planar
    trapezoid, so the solid's volume is exactly segments * sin(2 pi / segments) * integral(rho dA)
    over the profile polygon.

    Args:
        profile: (K, 2) float64 points (rho, z), metres.
        segments: number of vertices per ring (>= 3).

    Returns:
        vertices (V, 3) float64 and faces (F, 3) int64, outward winding.
    """
    profile = np.asarray(profile, dtype=np.float64)
    if profile.ndim != 2 or profile.shape[1] != 2 or len(profile) < 3:
        raise ValueError(f"profile must be (K>=3, 2), got {profile.shape}")
    if segments < 3:
        raise ValueError(f"segments must be >= 3, got {segments}")
    if np.any(np.all(np.diff(profile, axis=0) == 0.0, axis=1)):
        raise ValueError("profile has repeated consecutive points")
    rho, z = profile[:, 0], profile[:, 1]
    open_profile = rho[0] == 0.0 and rho[-1] == 0.0
    interior = rho[1:-1] if open_profile else rho
    if np.any(interior <= 0.0):
        raise ValueError("profile must touch the axis (rho == 0) only at both ends, or not at all")
    # Shoelace area in the (rho, z) plane (an open profile is closed along the axis). dS/di x dS/dk
    # is rho * (drho e_z - dz e_r), which points out of the solid for a clockwise profile.
    area2 = np.sum(rho * np.roll(z, -1) - np.roll(rho, -1) * z)
    if area2 > 0.0:
        profile = profile[::-1]
        rho, z = profile[:, 0], profile[:, 1]
    theta = 2.0 * np.pi * np.arange(segments) / segments
    cos, sin = np.cos(theta), np.sin(theta)
    ring_rho, ring_z = (rho[1:-1], z[1:-1]) if open_profile else (rho, z)
    rings = np.stack(
        [ring_rho[:, None] * cos[None], ring_rho[:, None] * sin[None], np.repeat(ring_z[:, None], segments, axis=1)],
        axis=2,
    )
    if open_profile:
        return loft(rings=rings, start_pole=np.array([0.0, 0.0, z[0]]), end_pole=np.array([0.0, 0.0, z[-1]]))
    return loft(rings=rings, start_pole=None, end_pole=None)


def sweep_tube(
    *,
    path: np.ndarray,
    tangents: np.ndarray,
    normals: np.ndarray,
    radii: np.ndarray,
    segments: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Sweep a circle of varying radius along a path into a closed tube.

    Ends with radius 0 become a pole (a rounded tip); ends with radius > 0 are closed flat by a fan
    around the path point. The caller keeps the radius below the path's radius of curvature so the
    tube does not intersect itself.

    Args:
        path: (M, 3) float64 centre points.
        tangents: (M, 3) unit tangents of the path.
        normals: (M, 3) unit vectors perpendicular to the tangents (the cross-section's first axis).
        radii: (M,) float64 cross-section radii; > 0 except possibly at the two ends.
        segments: vertices per cross-section circle (>= 3).

    Returns:
        vertices (V, 3) float64 and faces (F, 3) int64, outward winding.
    """
    path, tangents, normals = (np.asarray(a, dtype=np.float64) for a in (path, tangents, normals))
    radii = np.asarray(radii, dtype=np.float64)
    if path.ndim != 2 or path.shape[1] != 3 or len(path) < 2:
        raise ValueError(f"path must be (M>=2, 3), got {path.shape}")
    if tangents.shape != path.shape or normals.shape != path.shape or radii.shape != path.shape[:1]:
        raise ValueError("tangents, normals must match path (M, 3) and radii must be (M,)")
    if np.any(radii[1:-1] <= 0.0) or np.any(radii < 0.0):
        raise ValueError("radii must be > 0 along the path (0 allowed only at the ends)")
    # (tangent, normal, binormal = normal x tangent) makes dS/di x dS/dk point outwards.
    binormals = np.cross(normals, tangents)
    phi = 2.0 * np.pi * np.arange(segments) / segments
    directions = np.cos(phi)[None, :, None] * normals[:, None] + np.sin(phi)[None, :, None] * binormals[:, None]
    rings = path[:, None] + radii[:, None, None] * directions
    keep = np.ones(len(path), dtype=bool)
    keep[0] = radii[0] > 0.0
    keep[-1] = radii[-1] > 0.0
    return loft(rings=rings[keep], start_pole=path[0], end_pole=path[-1])
