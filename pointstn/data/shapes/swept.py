"""Tubes swept along planar curves: the banana family and the elliptical handle used by the mug.

Ranges below are in centimetres; the meshes are in metres.
"""

from __future__ import annotations

import numpy as np

from pointstn.data.shapes.loft import sweep_tube
from pointstn.data.shapes.spec import ShapeSpec, build_spec

BANANA_RINGS = 40  # cross-sections along the banana, poles excluded
TUBE_SEGMENTS = 24  # vertices per banana cross-section
HANDLE_RINGS = 24  # cross-sections along a handle
HANDLE_SEGMENTS = 16  # vertices per handle cross-section

EXTENT_RANGES = {
    "banana": ((0.03, 0.10, 0.025), (0.10, 0.25, 0.043)),
}


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def banana_radius(*, u: np.ndarray, params: dict) -> np.ndarray:
    """Cross-section radius along the banana, r(u) = r_max * sin(pi u^gamma)^0.5 for u in [0, 1].

    The exponent gamma < 1 moves the thickest point towards the stem end (u = 1 is the blunter
    tip), so the shape has no symmetry other than the mirror in its lying plane.
    """
    u = np.asarray(u, dtype=np.float64)
    return params["radius_max"] * np.sqrt(np.clip(np.sin(np.pi * u ** params["gamma"]), 0.0, None))


def banana(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """Banana-like curved capsule lying on its side: a circular cross-section of radius
    `banana_radius` (maximum 1.4-2.1 cm, tapering to rounded tips) swept along a circular arc of
    length 12-24 cm bending through 60-110 degrees in the xy-plane. Extents about
    (sagitta + thickness, chord, 2 r_max), i.e. x 3-10 cm, y 10-25 cm, z 2.5-4.3 cm.

    The arc radius (>= 6 cm) is well above the tube radius, so the tube never folds onto itself.
    Its continuous volume (Pappus) is integral over u of pi r(u)^2 * arc_length du. Symmetry "mirror".
    """
    length = _u(rng, 0.12, 0.24)
    bend = np.deg2rad(_u(rng, 60.0, 110.0))
    params = {
        "arc_length": length,
        "bend": float(bend),
        "arc_radius": float(length / bend),
        "radius_max": _u(rng, 0.014, 0.021),
        "gamma": _u(rng, 0.75, 0.9),
        "rings": BANANA_RINGS,
        "tube_segments": TUBE_SEGMENTS,
    }
    steps = BANANA_RINGS + 1
    u = (1.0 - np.cos(np.pi * np.arange(steps + 1) / steps)) / 2.0  # denser near the tips
    radii = banana_radius(u=u, params=params)
    radii[[0, -1]] = 0.0
    theta = bend * (u - 0.5)
    radial = np.stack([np.cos(theta), np.sin(theta), np.zeros_like(theta)], axis=1)
    tangent = np.stack([-np.sin(theta), np.cos(theta), np.zeros_like(theta)], axis=1)
    vertices, faces = sweep_tube(
        path=params["arc_radius"] * radial, tangents=tangent, normals=radial, radii=radii, segments=TUBE_SEGMENTS
    )
    return build_spec(family=family, seed=seed, params=params, vertices=vertices, faces=faces, symmetry="mirror")


def elliptic_handle(
    *, centre_x: float, centre_z: float, reach: float, half_height: float, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """A C-shaped handle in the xz-plane: a tube of constant radius along the right half of an ellipse.

    The path is (centre_x + reach cos t, 0, centre_z + half_height sin t) for t in [-pi/2, pi/2];
    its ends, at x = centre_x, are closed flat. The caller keeps `radius` below the ellipse's
    smallest radius of curvature, min(reach^2 / half_height, half_height^2 / reach).

    Returns:
        vertices (V, 3) float64 and faces (F, 3) int64, outward winding.
    """
    t = np.linspace(-np.pi / 2.0, np.pi / 2.0, HANDLE_RINGS)
    zeros = np.zeros_like(t)
    path = np.stack([centre_x + reach * np.cos(t), zeros, centre_z + half_height * np.sin(t)], axis=1)
    tangent = np.stack([-reach * np.sin(t), zeros, half_height * np.cos(t)], axis=1)
    normal = np.stack([half_height * np.cos(t), zeros, reach * np.sin(t)], axis=1)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return sweep_tube(
        path=path, tangents=tangent, normals=normal, radii=np.full(len(t), radius), segments=HANDLE_SEGMENTS
    )
