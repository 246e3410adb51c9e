"""Tests for pointstn.ops.volume against analytic volumes and slow references (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointstn.ops.volume import (
    DEFAULT_SOLID_RESOLUTION,
    convex_hull_volume,
    mesh_volume,
    solid_volume,
)

NUM_SURFACE_POINTS = 16384


# ---- analytic surfaces: uniform random samples and exact volumes ------------------------------


def sample_sphere(n: int, rng: np.random.Generator, r: float = 0.5) -> tuple[np.ndarray, float]:
    v = rng.normal(size=(n, 3))
    return r * v / np.linalg.norm(v, axis=1, keepdims=True), 4.0 / 3.0 * np.pi * r**3


def sample_box(n: int, rng: np.random.Generator, e: tuple = (1.0, 0.6, 0.4)) -> tuple[np.ndarray, float]:
    e = np.asarray(e)
    areas = np.repeat([e[1] * e[2], e[0] * e[2], e[0] * e[1]], 2)
    face = rng.choice(6, size=n, p=areas / areas.sum())
    p = (rng.random((n, 3)) - 0.5) * e
    axis = face // 2
    p[np.arange(n), axis] = np.where(face % 2 == 0, -0.5, 0.5) * e[axis]
    return p, float(e.prod())


def sample_cylinder(n: int, rng: np.random.Generator, r: float = 0.3, h: float = 1.0) -> tuple[np.ndarray, float]:
    w = np.array([2 * np.pi * r * h, np.pi * r * r, np.pi * r * r])
    part = rng.choice(3, size=n, p=w / w.sum())
    theta = rng.random(n) * 2 * np.pi
    rad = np.where(part == 0, r, r * np.sqrt(rng.random(n)))
    z = np.select([part == 1, part == 2], [-h / 2, h / 2], (rng.random(n) - 0.5) * h)
    return np.stack([rad * np.cos(theta), rad * np.sin(theta), z], 1), np.pi * r * r * h


def sample_torus(n: int, rng: np.random.Generator, R: float = 0.35, r: float = 0.15) -> tuple[np.ndarray, float]:
    out = np.zeros((0, 3))
    while len(out) < n:  # area element (R + r cos v): rejection sampling
        u, v = rng.random(4 * n) * 2 * np.pi, rng.random(4 * n) * 2 * np.pi
        keep = rng.random(4 * n) < (R + r * np.cos(v)) / (R + r)
        u, v = u[keep], v[keep]
        ring = R + r * np.cos(v)
        out = np.concatenate([out, np.stack([ring * np.cos(u), ring * np.sin(u), r * np.sin(v)], 1)])
    return out[:n], 2 * np.pi**2 * R * r * r


def sample_tube(
    n: int, rng: np.random.Generator, ri: float = 0.30, ro: float = 0.38, h: float = 1.0
) -> tuple[np.ndarray, float]:
    """Hollow cylinder (thin-walled-ish: wall 0.08 = 8% of its size): two walls and two annular caps."""
    cap = np.pi * (ro**2 - ri**2)
    w = np.array([2 * np.pi * ro * h, 2 * np.pi * ri * h, cap, cap])
    part = rng.choice(4, size=n, p=w / w.sum())
    theta = rng.random(n) * 2 * np.pi
    rad = np.select([part == 0, part == 1], [ro, ri], np.sqrt(ri**2 + (ro**2 - ri**2) * rng.random(n)))
    z = np.select([part == 2, part == 3], [-h / 2, h / 2], (rng.random(n) - 0.5) * h)
    return np.stack([rad * np.cos(theta), rad * np.sin(theta), z], 1), cap * h


SHAPES = {
    "sphere": sample_sphere,
    "box": sample_box,
    "cylinder": sample_cylinder,
    "torus": sample_torus,
    "tube": sample_tube,
}

# Measured at the default resolution, 16384 points, seed below (see solid_volume's docstring):
# sphere -0.009, box -0.003, cylinder +0.001, torus -0.008, tube -0.035; tolerance = measured + ~1%.
SOLID_REL_TOL = {"sphere": 0.02, "box": 0.02, "cylinder": 0.02, "torus": 0.025, "tube": 0.05}


def random_rotation_np(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def padded(clouds: list[np.ndarray], pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    P = max(len(c) for c in clouds)
    out = torch.full((len(clouds), P, 3), pad_value, dtype=torch.float64)
    for b, c in enumerate(clouds):
        out[b, : len(c)] = torch.from_numpy(c)
    return out, torch.tensor([len(c) for c in clouds])


# ---- solid_volume ----------------------------------------------------------------------------


def test_solid_volume_accuracy_on_analytic_shapes():
    rng = np.random.default_rng(1234)
    clouds, truth = [], []
    for name, sampler in SHAPES.items():
        pts, vol = sampler(NUM_SURFACE_POINTS - 37 * len(clouds), rng)  # ragged: exercises lengths
        clouds.append(pts @ random_rotation_np(rng).T + rng.normal(size=3))
        truth.append(vol)
    points, lengths = padded(clouds, pad_value=100.0)  # far-away padding must be ignored
    result = solid_volume(points, lengths)
    rel = result.volume.numpy() / np.array(truth) - 1.0
    print(f"\nsolid_volume relative error, resolution {DEFAULT_SOLID_RESOLUTION}, ~{NUM_SURFACE_POINTS} points:")
    for name, e in zip(SHAPES, rel):
        print(f"  {name:9s} {e:+.4f}")
    assert result.encloses.all()
    assert result.volume.dtype == torch.float64 and result.volume.shape == (len(SHAPES),)
    for name, e in zip(SHAPES, rel):
        assert abs(e) <= SOLID_REL_TOL[name], f"{name}: relative error {e:+.4f} > {SOLID_REL_TOL[name]}"


def test_solid_volume_is_scale_and_translation_equivariant():
    rng = np.random.default_rng(5)
    pts, _ = sample_torus(4096, rng)
    base = torch.from_numpy(pts)[None]
    moved = base * 2.5 + torch.tensor([3.0, -1.0, 7.0], dtype=torch.float64)
    v0, v1 = solid_volume(base).volume, solid_volume(moved).volume
    torch.testing.assert_close(v1, v0 * 2.5**3, rtol=1e-9, atol=0.0)


def test_solid_volume_flags_clouds_that_enclose_nothing():
    rng = np.random.default_rng(7)
    n = 4096
    square = np.c_[rng.random((n, 2)) - 0.5, np.zeros(n)] @ random_rotation_np(rng).T
    theta = rng.random(n) * 2 * np.pi
    open_cylinder = np.c_[0.3 * np.cos(theta), 0.3 * np.sin(theta), rng.random(n) - 0.5]
    cup, _ = sample_cylinder(n, rng)
    cup = cup[cup[:, 2] < 0.49]  # no lid
    line = np.outer(rng.random(n), [1.0, 2.0, 3.0])
    single = np.zeros((1, 3))
    sphere, vol = sample_sphere(n, rng)
    points, lengths = padded([square, open_cylinder, cup, line, single, sphere])
    lengths = torch.cat([lengths, torch.tensor([0])])
    points = torch.cat([points, torch.zeros(1, points.shape[1], 3, dtype=torch.float64)])
    result = solid_volume(points, lengths)
    assert result.encloses.tolist() == [False] * 5 + [True, False]
    assert result.volume[:5].tolist() == [0.0] * 5 and result.volume[6].item() == 0.0
    assert abs(result.volume[5].item() / vol - 1.0) < 0.05


def test_solid_volume_closing_radius_override_and_validation():
    rng = np.random.default_rng(3)
    pts, vol = sample_sphere(NUM_SURFACE_POINTS, rng)
    points = torch.from_numpy(pts)[None]
    result = solid_volume(points, closing_radius=0.08)
    h = 1.0 / DEFAULT_SOLID_RESOLUTION
    assert result.voxel_size.item() == pytest.approx(h, rel=1e-3)
    assert result.closing_radius.item() == pytest.approx((np.floor(0.08 / h + 1.0) + 0.5) * h, rel=1e-3)
    assert abs(result.volume.item() / vol - 1.0) < 0.03
    with pytest.raises(ValueError, match="closing_radius"):
        solid_volume(points, closing_radius=0.0)
    with pytest.raises(ValueError, match="resolution"):
        solid_volume(points, resolution=4)
    with pytest.raises(ValueError, match="non-finite"):
        solid_volume(torch.full((1, 5, 3), float("nan")))


# ---- convex_hull_volume -------------------------------------------------------------------------


def tetra_volume_reference(pts: np.ndarray) -> float:
    """Slow reference: sum of |det| / 6 over the Delaunay tetrahedra (they tile the hull)."""
    from scipy.spatial import Delaunay

    total = 0.0
    for simplex in Delaunay(pts).simplices:
        a, b, c, d = pts[simplex]
        total += abs(np.linalg.det(np.stack([b - a, c - a, d - a]))) / 6.0
    return total


def test_convex_hull_volume_matches_references():
    rng = np.random.default_rng(11)
    blob = rng.normal(size=(200, 3))
    e = np.array([1.0, 0.6, 0.4])
    corners = (np.array(np.meshgrid([-0.5, 0.5], [-0.5, 0.5], [-0.5, 0.5])).reshape(3, -1).T) * e
    box = np.concatenate([corners, (rng.random((300, 3)) - 0.5) * e]) @ random_rotation_np(rng).T
    points, lengths = padded([blob, box], pad_value=1e3)
    vols = convex_hull_volume(points, lengths)
    assert vols.dtype == torch.float64 and vols.shape == (2,)
    assert vols[0].item() == pytest.approx(tetra_volume_reference(blob), rel=1e-10)
    assert vols[1].item() == pytest.approx(float(e.prod()), rel=1e-10)


def test_convex_hull_volume_degenerate_inputs_are_zero():
    rng = np.random.default_rng(2)
    plane = np.c_[rng.random((50, 2)), np.zeros(50)] @ random_rotation_np(rng).T
    nearly_flat = plane + 1e-15 * rng.normal(size=plane.shape)
    line = np.outer(rng.random(50), [1.0, -2.0, 0.5])
    coincident = np.ones((10, 3))
    three = rng.random((3, 3))
    points, lengths = padded([plane, nearly_flat, line, coincident, three])
    lengths = torch.cat([lengths, torch.tensor([0])])
    points = torch.cat([points, torch.zeros(1, points.shape[1], 3, dtype=torch.float64)])
    vols = convex_hull_volume(points, lengths)
    assert vols.tolist()[0] == 0.0 and vols.tolist()[2:] == [0.0] * 4
    assert 0.0 <= vols[1].item() < 1e-12


# ---- mesh_volume ----------------------------------------------------------------------------------


def test_mesh_volume_matches_trimesh_and_analytic():
    import trimesh

    box = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    for mesh, exact in ((box, 0.24), (sphere, None)):
        v = torch.from_numpy(np.asarray(mesh.vertices) + 5.0)
        f = torch.from_numpy(np.asarray(mesh.faces))
        vol = mesh_volume(v, f)
        assert vol.dtype == torch.float64 and vol.ndim == 0
        assert vol.item() == pytest.approx(mesh.volume, rel=1e-12)
        if exact is not None:
            assert vol.item() == pytest.approx(exact, rel=1e-12)
        assert mesh_volume(v, f.flip(1)).item() == pytest.approx(-mesh.volume, rel=1e-12)


def test_mesh_volume_gradient():
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=1, radius=0.7)
    v = torch.from_numpy(np.asarray(mesh.vertices)).requires_grad_(True)
    f = torch.from_numpy(np.asarray(mesh.faces))
    assert torch.autograd.gradcheck(lambda x: mesh_volume(x, f), (v,))


def test_mesh_volume_rejects_open_or_inconsistent_meshes():
    import trimesh

    mesh = trimesh.creation.box()
    v = torch.from_numpy(np.asarray(mesh.vertices))
    f = torch.from_numpy(np.asarray(mesh.faces))
    with pytest.raises(ValueError, match="not closed"):
        mesh_volume(v, f[:-1])
    flipped = f.clone()
    flipped[0] = flipped[0].flip(0)
    with pytest.raises(ValueError, match="directed edge"):
        mesh_volume(v, flipped)
    with pytest.raises(ValueError, match="face indices"):
        mesh_volume(v, f + 100)
    assert mesh_volume(v, f[:-1], check_closed=False).item() != pytest.approx(1.0)
