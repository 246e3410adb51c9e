"""Procedural shape families: closed outward meshes, canonical frame, determinism, exact volumes."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import trimesh
from scipy.integrate import quad
from scipy.spatial import Delaunay

from pointstn.data.shapes import (
    EXTENT_RANGES,
    FAMILIES,
    SYMMETRIES,
    booleans,
    generate_shape,
)
from pointstn.data.shapes.loft import revolve_profile
from pointstn.data.shapes.spec import build_spec, signed_volume
from pointstn.data.shapes.swept import HANDLE_SEGMENTS, banana_radius
from pointstn.errors import PointstnError

SEEDS = (0, 1, 7, 2024)
EXACT_RTOL = 1e-12  # volumes that are closed-form sums of float64 products
BOOLEAN_RTOL = 1e-9  # volumes of manifold3d boolean results (float64 intersections)
CENTRE_ATOL = 1e-9  # metres
# Relative symmetric-difference volume under a symmetry: exact symmetries give ~1e-15; the mug
# and banana's mirrors are broken only by the diagonals splitting non-planar tube quads (<= ~3e-4).
SYMMETRIC_MISMATCH = 1e-3
ASYMMETRIC_MISMATCH = 1e-2  # ... under a transform that is not a symmetry
CONTAINERS = ("cup", "bowl", "plate", "mug")
FLAT_BOTTOMED = (
    "box",
    "can",
    "cone",
    "torus",
    "bottle",
    "cup",
    "bowl",
    "plate",
    "mug",
    "tool",
    "l_bracket",
    "t_bracket",
)
CASES = [(family, seed) for family in sorted(FAMILIES) for seed in SEEDS]


@functools.cache
def shape(family: str, seed: int):
    return generate_shape(family, seed)


def polygon_factor(segments: int) -> float:
    """Area of the regular polygon inscribed in the unit circle: segments sin(2 pi / segments) / 2."""
    return segments * np.sin(2.0 * np.pi / segments) / 2.0


def frustum(*, segments: int, r0: float, r1: float, height: float) -> float:
    return polygon_factor(segments) * height * (r0 * r0 + r0 * r1 + r1 * r1) / 3.0


def fan_moment(angles: np.ndarray) -> float:
    """integral of rho dA over the fan of chords of the unit circle at `angles` (measured from +rho)."""
    a0, a1 = angles[:-1], angles[1:]
    return float(np.sum(np.sin(a1 - a0) * (np.cos(a0) + np.cos(a1)) / 6.0))


def profile_moment(profile: np.ndarray) -> float:
    """|integral of rho dA| over a closed polygon in the (rho, z) plane (Green's theorem)."""
    x, y = profile[:, 0], profile[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    return abs(float(np.sum((x + x1) * (x * y1 - x1 * y)) / 6.0))


def radial_scale(directions: np.ndarray, p: dict) -> np.ndarray:
    """The fruit docstring's s(d) = 1 + sum_j a_j cos(f_j <d, u_j> + p_j), term by term."""
    scale = np.ones(len(directions))
    for a, u, f, phase in zip(p["noise_amplitudes"], p["noise_axes"], p["noise_frequencies"], p["noise_phases"]):
        scale += a * np.cos(f * (directions @ np.asarray(u)) + phase)
    return scale


def solid_centroid(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    w = np.einsum("ij,ij->i", a, np.cross(b, c))
    return (w[:, None] * (a + b + c)).sum(axis=0) / (4.0 * w.sum())


def mismatch(vertices: np.ndarray, faces: np.ndarray, transform: np.ndarray) -> float:
    """Volume of the symmetric difference between the solid and its image under `transform`
    (an orthogonal matrix), relative to the solid's volume: 0 for an exact symmetry."""
    import manifold3d

    solid = booleans.to_manifold(vertices=vertices, faces=faces)
    image_faces = faces if np.linalg.det(transform) > 0 else faces[:, ::-1]
    image = booleans.to_manifold(vertices=vertices @ transform.T, faces=image_faces)
    common = manifold3d.Manifold.batch_boolean([solid, image], manifold3d.OpType.Intersect)
    return (solid.volume() + image.volume() - 2.0 * common.volume()) / solid.volume()


def rotation(axis: str, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


# --- registry and arguments ------------------------------------------------------------------


def test_registry_lists_at_least_twelve_families_with_documented_ranges():
    assert len(FAMILIES) >= 12
    assert set(EXTENT_RANGES) == set(FAMILIES)
    for family, (low, high) in EXTENT_RANGES.items():
        assert all(0.0 < lo < hi for lo, hi in zip(low, high)), family
        assert 0.02 <= max(high) <= 0.35, family
        assert FAMILIES[family].__doc__ and " cm" in FAMILIES[family].__doc__, family


def test_unknown_family_and_bad_seed_are_user_errors():
    with pytest.raises(PointstnError, match="choose one of: .*bowl"):
        generate_shape("teapot", 0)
    for seed in (-1, 1.5, "3", True):
        with pytest.raises(PointstnError, match="non-negative integer"):
            generate_shape("box", seed)
    assert generate_shape("box", np.int64(5)).seed == 5


def test_build_spec_rejects_inward_winding():
    box = shape("box", 0)
    with pytest.raises(ValueError, match="non-positive signed volume"):
        build_spec(
            family="box", seed=0, params={}, vertices=box.vertices, faces=box.faces[:, ::-1], symmetry="discrete"
        )


# --- every family ----------------------------------------------------------------------------


@pytest.mark.parametrize("family, seed", CASES)
def test_mesh_is_closed_outward_and_light(family, seed):
    spec = shape(family, seed)
    vertices, faces = spec.vertices, spec.faces
    assert vertices.dtype == np.float64 and vertices.ndim == 2 and vertices.shape[1] == 3
    assert faces.dtype == np.int64 and faces.ndim == 2 and faces.shape[1] == 3
    assert np.isfinite(vertices).all()
    assert faces.min() == 0 and faces.max() == len(vertices) - 1
    assert len(faces) <= 4000
    # Each directed edge once, and its reverse once: closed, 2-manifold, consistently wound.
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    keys = set(map(tuple, directed.tolist()))
    assert len(keys) == len(directed)
    assert all((b, a) in keys for a, b in keys)
    assert len(np.unique(np.round(vertices, 12), axis=0)) == len(vertices)  # no seams of duplicates
    areas = np.linalg.norm(
        np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]]), axis=1
    )
    assert areas.min() > 0.0
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.is_volume
    # Outward normals: positive signed volume, equal to trimesh's independent computation.
    assert spec.volume_material > 0.0
    assert spec.volume_material == pytest.approx(mesh.volume, rel=EXACT_RTOL)
    assert spec.volume_material == pytest.approx(signed_volume(vertices=vertices, faces=faces), rel=EXACT_RTOL)


@pytest.mark.parametrize("family, seed", CASES)
def test_canonical_frame_extents_and_metadata(family, seed):
    spec = shape(family, seed)
    low, high = spec.vertices.min(axis=0), spec.vertices.max(axis=0)
    np.testing.assert_allclose((low + high) / 2.0, 0.0, atol=CENTRE_ATOL)
    np.testing.assert_array_equal(spec.extents, high - low)
    lo_doc, hi_doc = map(np.array, EXTENT_RANGES[family])
    assert np.all(spec.extents >= lo_doc) and np.all(spec.extents <= hi_doc), spec.extents
    assert 0.02 <= spec.extents.max() <= 0.35
    assert spec.family == family and spec.seed == seed
    assert spec.symmetry in SYMMETRIES
    assert json.loads(json.dumps(spec.params)) == spec.params
    assert spec.is_container == (family in CONTAINERS)
    assert spec.volume_target == spec.volume_filled
    if not spec.is_container:
        assert spec.volume_capacity is None and spec.volume_filled == spec.volume_material
    assert not spec.vertices.flags.writeable and not spec.faces.flags.writeable


@pytest.mark.parametrize("family", FLAT_BOTTOMED)
def test_flat_bottomed_families_stand_upright(family):
    """Upright: the solid's centroid lies above the polygon of vertices on the lowest plane."""
    for seed in SEEDS:
        spec = shape(family, seed)
        bottom = spec.vertices[spec.vertices[:, 2] < spec.vertices[:, 2].min() + 1e-12][:, :2]
        assert len(bottom) >= 3
        centroid = solid_centroid(spec.vertices, spec.faces)
        assert Delaunay(bottom).find_simplex(centroid[:2]) >= 0, (family, seed)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_deterministic_per_seed_and_different_across_seeds(family):
    first, second = generate_shape(family, 11), generate_shape(family, 11)
    assert first.vertices.tobytes() == second.vertices.tobytes()
    assert first.faces.tobytes() == second.faces.tobytes()
    assert json.dumps(first.params) == json.dumps(second.params)
    assert first.volume_filled == second.volume_filled
    other = generate_shape(family, 12)
    assert other.params != first.params
    assert first.vertices.shape != other.vertices.shape or not np.array_equal(first.vertices, other.vertices)


@pytest.mark.parametrize("family, seed", CASES)
def test_symmetry_tag_matches_the_mesh(family, seed):
    spec = shape(family, seed)
    flips = [np.diag(d) for d in ([-1.0, 1, 1], [1, -1.0, 1], [1, 1, -1.0])]
    turns = [rotation(axis, np.pi) for axis in "xyz"]

    def best(transforms):
        return min(mismatch(spec.vertices, spec.faces, t) for t in transforms)

    if spec.symmetry == "axial" and family != "fruit":  # the fruit's tag is its nominal spheroid
        assert best([rotation("z", 2.0 * np.pi / spec.params["segments"])]) < SYMMETRIC_MISMATCH
    elif spec.symmetry == "spherical":
        np.testing.assert_allclose(np.linalg.norm(spec.vertices, axis=1), spec.params["radius"], rtol=1e-12)
    elif spec.symmetry == "discrete":
        assert best(turns) < SYMMETRIC_MISMATCH
    elif spec.symmetry == "mirror":
        assert best(flips) < SYMMETRIC_MISMATCH
    if spec.has_unique_rotation:
        assert best(turns + [rotation("z", np.pi / 2.0)]) > ASYMMETRIC_MISMATCH
    if spec.symmetry == "none":
        assert best(flips) > ASYMMETRIC_MISMATCH


# --- volumes against closed forms --------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_primitive_volumes_are_analytic(seed):
    box = shape("box", seed).params
    assert shape("box", seed).volume_material == pytest.approx(
        box["size_x"] * box["size_y"] * box["size_z"], rel=EXACT_RTOL
    )
    np.testing.assert_allclose(
        shape("box", seed).extents, [box["size_x"], box["size_y"], box["size_z"]], rtol=EXACT_RTOL
    )

    can = shape("can", seed).params
    n = can["segments"]
    exact = polygon_factor(n) * can["radius"] ** 2 * can["height"]
    assert shape("can", seed).volume_material == pytest.approx(exact, rel=EXACT_RTOL)
    circle = np.pi * can["radius"] ** 2 * can["height"]  # inscribed polygon: deficit 1 - factor / pi
    assert 0.0 < 1.0 - shape("can", seed).volume_material / circle <= 1.0 - polygon_factor(n) / np.pi + 1e-12

    cone = shape("cone", seed).params
    exact = frustum(segments=cone["segments"], r0=cone["radius_bottom"], r1=cone["radius_top"], height=cone["height"])
    assert shape("cone", seed).volume_material == pytest.approx(exact, rel=EXACT_RTOL)

    torus = shape("torus", seed).params
    n, m = torus["segments"], torus["tube_segments"]
    exact = 2.0 * polygon_factor(n) * polygon_factor(m) * torus["minor_radius"] ** 2 * torus["major_radius"]
    assert shape("torus", seed).volume_material == pytest.approx(exact, rel=EXACT_RTOL)
    v = shape("torus", seed).vertices  # every vertex on the true torus surface
    core = np.hypot(v[:, 0], v[:, 1]) - torus["major_radius"]
    np.testing.assert_allclose(np.hypot(core, v[:, 2]), torus["minor_radius"], rtol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_ball_volume_is_analytic_and_between_inscribed_and_circumscribed_spheres(seed):
    spec = shape("ball", seed)
    r, n = spec.params["radius"], spec.params["segments"]
    phi = np.linspace(-np.pi / 2.0, np.pi / 2.0, spec.params["arc_points"] + 1)
    exact = 2.0 * polygon_factor(n) * r**3 * fan_moment(phi)
    assert spec.volume_material == pytest.approx(exact, rel=EXACT_RTOL)
    # A convex polyhedron with its vertices on the sphere lies inside it and contains the ball whose
    # radius is the smallest distance from the centre to a face plane.
    v, f = spec.vertices, spec.faces
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    inner = np.min(np.einsum("ij,ij->i", normals / np.linalg.norm(normals, axis=1, keepdims=True), v[f[:, 0]]))
    assert 4.0 / 3.0 * np.pi * inner**3 < spec.volume_material < 4.0 / 3.0 * np.pi * r**3


@pytest.mark.parametrize("seed", SEEDS)
def test_fruit_volume_matches_its_continuous_surface(seed):
    """det(A) / 3 * integral of s^3 over the sphere (200k-point Fibonacci quadrature); the mesh
    underestimates it by the same chord factor as the undeformed icosphere, to 0.1 %."""
    spec = shape("fruit", seed)
    p = spec.params
    count = 200_000
    i = np.arange(count) + 0.5
    z = 1.0 - 2.0 * i / count
    azimuth = np.pi * (1.0 + 5.0**0.5) * i
    ring = np.sqrt(1.0 - z * z)
    directions = np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), z], axis=1)
    scale = radial_scale(directions, p)
    continuous = p["radius_xy"] ** 2 * p["radius_z"] * 4.0 * np.pi / 3.0 * np.mean(scale**3)
    icosphere = trimesh.creation.icosphere(subdivisions=p["subdivisions"])
    chord_factor = icosphere.volume / (4.0 / 3.0 * np.pi)
    assert spec.volume_material / continuous == pytest.approx(chord_factor, abs=1e-3)
    # The mesh is the icosphere moved to s(d) A d, translated to its bounding-box centre.
    unit = np.asarray(icosphere.vertices) / np.linalg.norm(icosphere.vertices, axis=1, keepdims=True)
    built = radial_scale(unit, p)[:, None] * unit * [p["radius_xy"], p["radius_xy"], p["radius_z"]]
    np.testing.assert_allclose(
        spec.vertices, built - (built.min(axis=0) + built.max(axis=0)) / 2.0, rtol=0.0, atol=1e-15
    )
    # Star-shaped about the spheroid's centre: every face looks away from it, no fold-overs.
    f = spec.faces
    normals = np.cross(built[f[:, 1]] - built[f[:, 0]], built[f[:, 2]] - built[f[:, 0]])
    assert np.all(np.einsum("ij,ij->i", normals, built[f].mean(axis=1)) > 0.0)
    assert np.all(np.abs(scale - 1.0) <= p["noise_amplitude"] + 1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_banana_volume_matches_pappus(seed):
    """Pappus: integral of pi r(u)^2 * arc length du; the mesh has polygonal cross-sections
    (factor polygon_factor / pi) and chords along the arc, which stay within 0.5 % after that factor."""
    spec = shape("banana", seed)
    p = spec.params
    continuous = quad(
        lambda u: np.pi * banana_radius(u=np.array(u), params=p) ** 2 * p["arc_length"], 0.0, 1.0, limit=200
    )[0]
    polygon = continuous * polygon_factor(p["tube_segments"]) / np.pi
    assert spec.volume_material == pytest.approx(polygon, rel=5e-3)


@pytest.mark.parametrize("seed", SEEDS)
def test_cup_and_plate_volumes_are_frustums(seed):
    cup = shape("cup", seed)
    p = cup.params
    n, h, base, wall = p["segments"], p["height"], p["base"], p["wall"]
    r0, r1 = p["radius_bottom"], p["radius_rim"]
    inner_bottom = r0 + (r1 - r0) * base / h - wall
    capacity = frustum(segments=n, r0=inner_bottom, r1=r1 - wall, height=h - base)
    assert cup.volume_capacity == pytest.approx(capacity, rel=EXACT_RTOL)
    assert cup.volume_filled == pytest.approx(frustum(segments=n, r0=r0, r1=r1, height=h), rel=EXACT_RTOL)

    plate = shape("plate", seed)
    p = plate.params
    capacity = frustum(
        segments=p["segments"], r0=p["radius_well"], r1=p["radius_rim"] - p["rim_wall"], height=p["height"] - p["floor"]
    )
    filled = frustum(segments=p["segments"], r0=p["radius_foot"], r1=p["radius_rim"], height=p["height"])
    assert plate.volume_capacity == pytest.approx(capacity, rel=EXACT_RTOL)
    assert plate.volume_filled == pytest.approx(filled, rel=EXACT_RTOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_bowl_capacity_is_the_sampled_half_spheroid(seed):
    spec = shape("bowl", seed)
    p = spec.params
    psi = np.linspace(0.0, np.pi / 2.0, p["arc_points"] + 1)
    exact = 2.0 * polygon_factor(p["segments"]) * p["radius"] ** 2 * p["depth"] * fan_moment(psi)
    assert spec.volume_capacity == pytest.approx(exact, rel=EXACT_RTOL)
    # The fan of chords at step dpsi contains the quarter disc of radius cos(dpsi / 2), so the mesh
    # holds between (factor / pi) cos^3(dpsi / 2) and 1 times the continuous half-spheroid.
    half_spheroid = 2.0 / 3.0 * np.pi * p["radius"] ** 2 * p["depth"]
    lower = polygon_factor(p["segments"]) / np.pi * np.cos(np.pi / 4.0 / p["arc_points"]) ** 3
    assert lower <= spec.volume_capacity / half_spheroid < 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_mug_capacity_is_the_cylindrical_cavity_and_handle_adds_volume(seed):
    spec = shape("mug", seed)
    p = spec.params
    c = polygon_factor(p["segments"])
    inner = p["radius"] - p["wall"]
    assert spec.volume_capacity == pytest.approx(c * inner**2 * (p["height"] - p["base"]), rel=EXACT_RTOL)
    body = c * p["radius"] ** 2 * p["height"]
    # The handle adds at most its whole tube (half-ellipse perimeter <= pi * max semi-axis, times the
    # cross-section) and at least the part of the tube whose path runs beyond radius + tube radius:
    # a path stretch of length >= 2 (reach - tube radius) whose polygonal tube lies outside the body
    # (0.9: chords along the path).
    r = p["handle_radius"]
    semi = max(p["handle_reach"] + p["radius"] - p["handle_centre_x"], p["handle_half_height"])
    outside = 0.9 * polygon_factor(HANDLE_SEGMENTS) * r**2 * 2.0 * (p["handle_reach"] - r)
    assert body + outside < spec.volume_filled < body + np.pi * r**2 * np.pi * semi


@pytest.mark.parametrize("family, seed", [(f, s) for f in CONTAINERS for s in SEEDS])
def test_filled_is_material_plus_capacity(family, seed):
    spec = shape(family, seed)
    rtol = BOOLEAN_RTOL if family == "mug" else EXACT_RTOL
    assert spec.volume_capacity > 0.0
    assert spec.volume_filled == pytest.approx(spec.volume_material + spec.volume_capacity, rel=rtol)


@pytest.mark.parametrize("seed", SEEDS)
def test_boolean_family_volumes_are_analytic(seed):
    tool = shape("tool", seed).params
    c = polygon_factor(tool["segments"]) * tool["handle_radius"] ** 2
    exact = c * tool["handle_length"] + tool["head_x"] * tool["head_y"] * tool["head_z"] - c * tool["buried"]
    assert shape("tool", seed).volume_material == pytest.approx(exact, rel=BOOLEAN_RTOL)

    bracket = shape("l_bracket", seed).params
    t, w = bracket["thickness"], bracket["width"]
    hole = polygon_factor(bracket["hole_segments"]) * bracket["hole_radius"] ** 2 * t
    exact = t * w * bracket["upright"] + t * w * (bracket["lying"] - t) - 2.0 * hole
    assert shape("l_bracket", seed).volume_material == pytest.approx(exact, rel=BOOLEAN_RTOL)

    tee = shape("t_bracket", seed).params
    hole = polygon_factor(tee["hole_segments"]) * tee["hole_radius"] ** 2 * tee["base"]
    exact = (
        tee["length"] * tee["base"] * tee["width"]
        + tee["stem"] * (tee["height"] - tee["base"]) * tee["width"]
        - 2.0 * hole
    )
    assert shape("t_bracket", seed).volume_material == pytest.approx(exact, rel=BOOLEAN_RTOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_bottle_volume_lies_between_its_cylinders(seed):
    spec = shape("bottle", seed)
    p = spec.params
    c = polygon_factor(p["segments"])
    total = p["height_body"] + p["height_shoulder"] + p["height_neck"] + p["height_cap"]
    lower = c * (
        p["radius_body"] ** 2 * (p["height_body"] - p["chamfer"])
        + p["radius_neck"] ** 2 * (p["height_shoulder"] + p["height_neck"])
    )
    assert lower < spec.volume_material < c * p["radius_body"] ** 2 * total
    np.testing.assert_allclose(spec.extents[2], total, rtol=EXACT_RTOL)


# --- the revolve builder -----------------------------------------------------------------------


@pytest.mark.parametrize("segments", [3, 7, 48])
def test_revolve_volume_is_exact_for_either_profile_orientation(segments):
    rng = np.random.default_rng(segments)
    # A random simple profile: a star-shaped polygon around (rho, z) = (2, 0) (a closed ring), and
    # an open profile with increasing z between two axis points.
    angles = np.sort(rng.uniform(0.0, 2.0 * np.pi, size=9))
    ring = np.stack(
        [2.0 + rng.uniform(0.3, 1.0, 9) * np.cos(angles), rng.uniform(0.3, 1.0, 9) * np.sin(angles)], axis=1
    )
    z = np.sort(rng.uniform(0.0, 3.0, size=8))
    open_profile = np.concatenate(
        [[[0.0, z[0]]], np.stack([rng.uniform(0.2, 2.0, 6), z[1:-1]], axis=1), [[0.0, z[-1]]]]
    )
    for profile in (ring, open_profile):
        expected = segments * np.sin(2.0 * np.pi / segments) * profile_moment(profile)
        for oriented in (profile, profile[::-1]):
            vertices, faces = revolve_profile(profile=oriented, segments=segments)
            mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
            assert mesh.is_watertight and mesh.is_winding_consistent
            assert signed_volume(vertices=vertices, faces=faces) == pytest.approx(expected, rel=EXACT_RTOL)


def test_revolve_rejects_bad_profiles():
    with pytest.raises(ValueError, match="touch the axis"):
        revolve_profile(profile=np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 2.0], [0.0, 2.0]]), segments=8)
    with pytest.raises(ValueError, match="repeated"):
        revolve_profile(profile=np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), segments=8)
    with pytest.raises(ValueError, match="segments"):
        revolve_profile(profile=np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), segments=2)
