"""Closed primitive families: box, can, cone, ball, fruit, torus.

Each generator takes a `numpy.random.Generator` (the only source of randomness) and returns a
`ShapeSpec` whose `family` and `seed` the caller (`generate_shape`) fills in through `build_spec`.
Ranges below are in centimetres; the meshes are in metres.
"""

from __future__ import annotations

import numpy as np

from pointstn.data.shapes.loft import revolve_profile
from pointstn.data.shapes.spec import ShapeSpec, build_spec

AZIMUTH_SEGMENTS = 48  # vertices per ring around the z axis for bodies of revolution
FRUIT_SUBDIVISIONS = 3  # icosphere subdivisions of the fruit (1280 faces)
FRUIT_NOISE_TERMS = 6

# Documented bounding-box extents (x, y, z) in metres: (lower bounds, upper bounds).
EXTENT_RANGES = {
    "box": ((0.04, 0.03, 0.02), (0.35, 0.30, 0.35)),
    "can": ((0.04, 0.04, 0.04), (0.12, 0.12, 0.25)),
    "cone": ((0.04, 0.04, 0.04), (0.24, 0.24, 0.30)),
    "ball": ((0.04, 0.04, 0.04), (0.24, 0.24, 0.24)),
    "fruit": ((0.04, 0.04, 0.03), (0.125, 0.125, 0.15)),
    "torus": ((0.0336, 0.0336, 0.0045), (0.232, 0.232, 0.072)),
}


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def box(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """Carton / box: size x 4-35 cm, y 3-30 cm, z 2-35 cm (extents are exactly the size).

    Symmetry "discrete" (180-degree turns about the axes). Volume = x * y * z exactly.
    """
    size = [_u(rng, 0.04, 0.35), _u(rng, 0.03, 0.30), _u(rng, 0.02, 0.35)]
    corners = np.array([[i, j, k] for i in (0.0, 1.0) for j in (0.0, 1.0) for k in (0.0, 1.0)]) * size
    # Corner index = 4 i + 2 j + k; two triangles per face, counter-clockwise seen from outside.
    # fmt: off
    faces = np.array(
        [
            [0, 1, 3], [0, 3, 2],  # x = 0
            [4, 6, 7], [4, 7, 5],  # x = 1
            [0, 4, 5], [0, 5, 1],  # y = 0
            [2, 3, 7], [2, 7, 6],  # y = 1
            [0, 2, 6], [0, 6, 4],  # z = 0
            [1, 5, 7], [1, 7, 3],  # z = 1
        ],
        dtype=np.int64,
    )
    # fmt: on
    params = {"size_x": size[0], "size_y": size[1], "size_z": size[2]}
    return build_spec(family=family, seed=seed, params=params, vertices=corners, faces=faces, symmetry="discrete")


def can(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """Can / cylinder: radius 2-6 cm, height 4-25 cm; extents (2r, 2r, h).

    A prism over a regular polygon with `segments` vertices on the circle, so its volume is exactly
    segments * sin(2 pi / segments) / 2 * r^2 * h. Symmetry "axial".
    """
    radius, height = _u(rng, 0.02, 0.06), _u(rng, 0.04, 0.25)
    profile = np.array([[0.0, 0.0], [radius, 0.0], [radius, height], [0.0, height]])
    vertices, faces = revolve_profile(profile=profile, segments=AZIMUTH_SEGMENTS)
    params = {"radius": radius, "height": height, "segments": AZIMUTH_SEGMENTS}
    return build_spec(family=family, seed=seed, params=params, vertices=vertices, faces=faces, symmetry="axial")


def cone(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """Truncated cone (traffic cone, lamp shade, upright funnel body): bottom radius 2-12 cm, top
    radius 10-70 % of the bottom one, height 4-30 cm; extents (2 r_bottom, 2 r_bottom, h).

    Volume exactly segments * sin(2 pi / segments) / 2 * h / 3 * (r0^2 + r0 r1 + r1^2). Symmetry "axial".
    """
    r_bottom = _u(rng, 0.02, 0.12)
    r_top = r_bottom * _u(rng, 0.1, 0.7)
    height = _u(rng, 0.04, 0.30)
    profile = np.array([[0.0, 0.0], [r_bottom, 0.0], [r_top, height], [0.0, height]])
    vertices, faces = revolve_profile(profile=profile, segments=AZIMUTH_SEGMENTS)
    params = {"radius_bottom": r_bottom, "radius_top": r_top, "height": height, "segments": AZIMUTH_SEGMENTS}
    return build_spec(family=family, seed=seed, params=params, vertices=vertices, faces=faces, symmetry="axial")


def ball(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """Ball / sphere: radius 2-12 cm; extents (2r, 2r, 2r).

    A latitude-longitude sphere: a semicircle sampled at `arc_points` + 1 equally spaced polar
    angles (vertices on the true sphere) revolved with `segments` vertices per ring. Symmetry
    "spherical".
    """
    radius = _u(rng, 0.02, 0.12)
    arc_points = 24
    phi = np.linspace(-np.pi / 2.0, np.pi / 2.0, arc_points + 1)
    profile = radius * np.stack([np.cos(phi), np.sin(phi)], axis=1)
    profile[[0, -1], 0] = 0.0  # poles exactly on the axis
    profile[arc_points // 2] = (radius, 0.0)
    vertices, faces = revolve_profile(profile=profile, segments=AZIMUTH_SEGMENTS)
    params = {"radius": radius, "arc_points": arc_points, "segments": AZIMUTH_SEGMENTS}
    return build_spec(family=family, seed=seed, params=params, vertices=vertices, faces=faces, symmetry="spherical")


def fruit_radial_scale(*, directions: np.ndarray, params: dict) -> np.ndarray:
    """The fruit's smooth radial scale s(d) = 1 + sum_j a_j cos(f_j <d, u_j> + p_j).

    Args:
        directions: (P, 3) unit vectors.
        params: a fruit's `params` (noise amplitudes, frequencies, axes, phases).

    Returns:
        (P,) float64 scale factors, within 1 +- sum(a_j).
    """
    axes = np.asarray(params["noise_axes"], dtype=np.float64)
    amplitudes = np.asarray(params["noise_amplitudes"], dtype=np.float64)
    frequencies = np.asarray(params["noise_frequencies"], dtype=np.float64)
    phases = np.asarray(params["noise_phases"], dtype=np.float64)
    return 1.0 + np.cos(frequencies * (directions @ axes.T) + phases) @ amplitudes


def fruit(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """Fruit (apple, orange, lemon, potato): a spheroid with horizontal radius 2.5-5.5 cm and vertical
    radius 80-120 % of it, deformed radially by smooth low-frequency noise of total relative
    amplitude 3-12 %; extents about (2 r_xy, 2 r_xy, 2 r_z) * (1 +- amplitude), i.e. x, y 4-12.5 cm,
    z 3-15 cm.

    The surface is {s(d) * A d : d unit}, A = diag(r_xy, r_xy, r_z), with s from
    `fruit_radial_scale` (frequencies 1-3 rad per unit of <d, u>, so a few bumps at most). s stays
    positive and smooth, so the shape is star-shaped about the origin and the icosphere mesh moved
    onto it stays watertight and free of self-intersections. Its continuous volume is
    det(A) / 3 * integral over the unit sphere of s(d)^3. Symmetry "axial": the tag describes the
    nominal spheroid; the noise is a small random deformation, not a feature that fixes a rotation.
    """
    import trimesh

    r_xy = _u(rng, 0.025, 0.055)
    r_z = r_xy * _u(rng, 0.8, 1.2)
    amplitude = _u(rng, 0.03, 0.12)
    weights = rng.dirichlet(np.ones(FRUIT_NOISE_TERMS))
    axes = rng.normal(size=(FRUIT_NOISE_TERMS, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    frequencies = rng.uniform(1.0, 3.0, size=FRUIT_NOISE_TERMS)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=FRUIT_NOISE_TERMS)
    params = {
        "radius_xy": r_xy,
        "radius_z": r_z,
        "noise_amplitude": amplitude,
        "noise_amplitudes": (amplitude * weights).tolist(),
        "noise_axes": axes.tolist(),
        "noise_frequencies": frequencies.tolist(),
        "noise_phases": phases.tolist(),
        "subdivisions": FRUIT_SUBDIVISIONS,
    }
    sphere = trimesh.creation.icosphere(subdivisions=FRUIT_SUBDIVISIONS, radius=1.0)
    directions = np.asarray(sphere.vertices, dtype=np.float64)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    scale = fruit_radial_scale(directions=directions, params=params)
    vertices = scale[:, None] * directions * np.array([r_xy, r_xy, r_z])
    faces = np.asarray(sphere.faces, dtype=np.int64)
    return build_spec(family=family, seed=seed, params=params, vertices=vertices, faces=faces, symmetry="axial")


def torus(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """Torus / ring (tape roll, ring toy, donut), lying flat: major radius 1.5-8 cm, tube radius
    15-45 % of it; extents (2 (R + r), 2 (R + r), 2 r), i.e. x, y 3.4-23.2 cm, z 0.45-7.2 cm.

    The tube's cross-section is a regular polygon of `tube_segments` vertices on the circle,
    revolved with `segments` vertices per ring, so the volume is exactly
    segments sin(2 pi / segments) * tube_segments sin(2 pi / tube_segments) / 2 * r^2 * R.
    Symmetry "axial".
    """
    major = _u(rng, 0.015, 0.08)
    minor = major * _u(rng, 0.15, 0.45)
    tube_segments = 24
    phi = 2.0 * np.pi * np.arange(tube_segments) / tube_segments
    profile = np.stack([major + minor * np.cos(phi), minor * np.sin(phi)], axis=1)
    vertices, faces = revolve_profile(profile=profile, segments=AZIMUTH_SEGMENTS)
    params = {
        "major_radius": major,
        "minor_radius": minor,
        "tube_segments": tube_segments,
        "segments": AZIMUTH_SEGMENTS,
    }
    return build_spec(family=family, seed=seed, params=params, vertices=vertices, faces=faces, symmetry="axial")
