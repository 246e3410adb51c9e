"""Robust mesh booleans through manifold3d (imported lazily), in float64."""

from __future__ import annotations

import numpy as np

from pointstn.errors import MissingDependencyError


def _manifold3d():
    try:
        import manifold3d
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "manifold3d", "procedural shapes built from booleans", "pip install manifold3d"
        ) from error
    return manifold3d


def to_manifold(*, vertices: np.ndarray, faces: np.ndarray):
    """A `manifold3d.Manifold` from a closed, outward-wound mesh: vertices (V, 3), faces (F, 3)."""
    manifold3d = _manifold3d()
    mesh = manifold3d.Mesh64(
        vert_properties=np.array(vertices, dtype=np.float64, order="C"),  # copies: must be writable
        tri_verts=np.array(faces, dtype=np.uint64, order="C"),
    )
    solid = manifold3d.Manifold(mesh)
    if solid.status() != manifold3d.Error.NoError:
        raise ValueError(f"mesh is not a closed oriented 2-manifold: {solid.status()}")
    return solid


def from_manifold(solid) -> tuple[np.ndarray, np.ndarray]:
    """vertices (V, 3) float64 and faces (F, 3) int64 of a `manifold3d.Manifold`."""
    mesh = solid.to_mesh64()
    vertices = np.asarray(mesh.vert_properties, dtype=np.float64)[:, :3]
    faces = np.asarray(mesh.tri_verts, dtype=np.int64)
    return np.ascontiguousarray(vertices), np.ascontiguousarray(faces)


def box(*, lo: tuple[float, float, float], hi: tuple[float, float, float]):
    """An axis-aligned box [lo, hi] as a `manifold3d.Manifold`."""
    manifold3d = _manifold3d()
    size = [float(h - l) for l, h in zip(lo, hi)]
    return manifold3d.Manifold.cube(size).translate([float(v) for v in lo])


def cylinder(*, radius: float, length: float, segments: int, axis: str, centre: tuple[float, float, float]):
    """A prism over a regular `segments`-gon inscribed in a circle, centred at `centre`, along axis "x" or "z"."""
    manifold3d = _manifold3d()
    solid = manifold3d.Manifold.cylinder(length, radius, radius, segments, True)
    if axis == "x":
        solid = solid.rotate([0.0, 90.0, 0.0])
    elif axis != "z":
        raise ValueError(f"axis must be 'x' or 'z', got {axis!r}")
    return solid.translate([float(c) for c in centre])


def triangulate(outline: np.ndarray) -> np.ndarray:
    """Triangles (T, 3) int64 of a simple counter-clockwise polygon (K, 2), indexing its points."""
    manifold3d = _manifold3d()
    return np.asarray(manifold3d.triangulate([np.array(outline, dtype=np.float64, order="C")]), dtype=np.int64)


def union(*solids):
    """The union of `manifold3d.Manifold` solids."""
    manifold3d = _manifold3d()
    return manifold3d.Manifold.batch_boolean(list(solids), manifold3d.OpType.Add)


def difference(solid, *tools):
    """`solid` minus every `manifold3d.Manifold` in `tools`."""
    manifold3d = _manifold3d()
    return manifold3d.Manifold.batch_boolean([solid, *tools], manifold3d.OpType.Subtract)
