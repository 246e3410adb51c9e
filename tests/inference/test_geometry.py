"""Derived geometry against analytic shapes; the scale-hint rule; units in every output."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pointstn.errors import PointstnError
from pointstn.inference.geometry import UNITS, canonical_longest_edge, derive_geometry, scale_hint_factor

VOLUME_RTOL = 0.05  # solid_volume at 4096 points runs 1-3 % low (its docstring)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def box_surface(rng: np.random.Generator, dims: np.ndarray, count: int) -> np.ndarray:
    """Uniform samples on the surface of an axis-aligned box centred at 0 (float64 reference)."""
    areas = np.array([dims[1] * dims[2], dims[0] * dims[2], dims[0] * dims[1]]) * 2
    face = rng.choice(3, size=count, p=areas / areas.sum())
    points = (rng.random((count, 3)) - 0.5) * dims
    side = rng.choice([-0.5, 0.5], size=count)
    points[np.arange(count), face] = side * dims[face]
    return points


def test_box_geometry_matches_analytic_values():
    rng = np.random.default_rng(0)
    dims = np.array([0.2, 0.12, 0.08])
    canonical = box_surface(rng, dims, 4096)
    R, t = random_rotation(rng), np.array([0.05, -0.02, 1.0])
    camera = canonical @ R.T + t
    g = derive_geometry(camera, canonical)
    assert g.encloses_volume and g.solid_volume_m3 == pytest.approx(dims.prod(), rel=VOLUME_RTOL)
    assert g.convex_hull_volume_m3 == pytest.approx(dims.prod(), rel=0.01)
    assert g.convex_hull_volume_m3 <= dims.prod() + 1e-12
    assert np.allclose(g.obb_extents_m, np.sort(dims)[::-1], rtol=0.02)
    assert np.allclose(g.obb_center_m, t, atol=2e-3)
    # the box's longest axis is the cloud's longest direction, up to sign
    assert abs(abs(g.obb_axes[:, 0] @ R[:, 0]) - 1) < 1e-3
    assert g.longest_edge_m == pytest.approx(0.2, rel=1e-3)


def test_open_surface_is_flagged_not_given_a_volume():
    rng = np.random.default_rng(1)
    square = np.column_stack([rng.random((2048, 2)) * 0.2, np.zeros(2048)]) + [0, 0, 1.0]
    g = derive_geometry(square, square)
    assert not g.encloses_volume and g.solid_volume_m3 is None
    assert g.convex_hull_volume_m3 == 0.0 and g.obb_extents_m[2] == 0.0
    assert g.to_json()["solid_volume_m3"] is None


def test_volumes_scale_with_the_cube():
    rng = np.random.default_rng(2)
    sphere = rng.normal(size=(4096, 3))
    sphere = 0.1 * sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
    base = derive_geometry(sphere + [0, 0, 1], sphere)
    factor = 1.7
    scaled = derive_geometry(factor * (sphere + [0, 0, 1]), factor * sphere)
    assert base.solid_volume_m3 == pytest.approx(4 / 3 * math.pi * 0.1**3, rel=VOLUME_RTOL)
    assert scaled.solid_volume_m3 == pytest.approx(factor**3 * base.solid_volume_m3, rel=1e-9)
    assert scaled.convex_hull_volume_m3 == pytest.approx(factor**3 * base.convex_hull_volume_m3, rel=1e-9)
    assert scaled.longest_edge_m == pytest.approx(factor * base.longest_edge_m, rel=1e-12)


def test_scale_hint_factor():
    assert scale_hint_factor(0.3, 0.15) == pytest.approx(2.0)
    assert scale_hint_factor(1, 4.0) == pytest.approx(0.25)
    for bad in (0, -1.0, math.nan, math.inf, True, "1", None):
        with pytest.raises(PointstnError, match="positive number"):
            scale_hint_factor(bad, 1.0)  # type: ignore[arg-type]
    with pytest.raises(PointstnError, match="no extent"):
        scale_hint_factor(0.2, 0.0)
    assert canonical_longest_edge(np.array([[0, 0, 0], [0.1, -0.3, 0.2]])) == pytest.approx(0.3)


def test_units_are_stated_for_every_written_quantity():
    g = derive_geometry(np.random.default_rng(3).normal(size=(64, 3)), np.random.default_rng(3).normal(size=(64, 3)))
    written = {"solid_volume", "convex_hull_volume", "obb.center", "obb.extents", "obb.axes", "longest_edge"}
    assert written <= set(UNITS)
    assert set(g.to_json()) == {"solid_volume_m3", "encloses_volume", "convex_hull_volume_m3", "obb", "longest_edge_m"}
