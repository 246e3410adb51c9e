"""The result of generating one procedural shape, and the one place that measures it.

Every family builds a closed, outward-wound triangle mesh in metres with +z up and hands it to
`build_spec`, which moves the bounding-box centre to the origin (DESIGN.md section 2) and
measures volumes and extents, so every family follows the same conventions.

Volumes (all in cubic metres):
- `volume_material`: the volume of the mesh itself, i.e. of the solid material.
- `volume_capacity`: for open containers (mug, cup, bowl, plate) the interior the object would
  hold when filled up to its rim; `None` for closed objects.
- `volume_filled`: the volume of the object with its cavity filled up to the rim, i.e. the solid a
  robot sees from outside (material + capacity). For closed objects it equals `volume_material`.
`volume_target` (= `volume_filled`) is the volume that evaluation (`vol_rel_err`) compares against:
a reconstructed point cloud shows the outside of the object, so for an open container the volume it
can be judged on is the filled one, and for a closed object this is just its solid volume.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# Symmetry tags, describing the family's nominal shape (before any random surface noise):
#   "none"      no symmetry;
#   "mirror"    mirror plane(s) only, no proper rotation maps the shape onto itself;
#   "discrete"  a finite group of proper rotations (e.g. 180 degrees about an axis) maps it onto itself;
#   "axial"     any rotation about the z axis maps it onto itself (bodies of revolution);
#   "spherical" any rotation maps it onto itself.
# The rotation of an object is unique only for "none" and "mirror" (a mirror is not a rotation).
SYMMETRIES = ("none", "mirror", "discrete", "axial", "spherical")
UNIQUE_ROTATION_SYMMETRIES = ("none", "mirror")


@dataclass(frozen=True, eq=False)
class ShapeSpec:
    """One generated object, in its canonical frame (origin at the bounding-box centre, +z up, metres).

    Attributes:
        family: the family name (a key of `pointstn.data.shapes.FAMILIES`).
        seed: the seed it was generated from; `generate_shape(family, seed)` rebuilds it exactly.
        params: the sampled parameters (metres, radians, counts), JSON-serializable.
        vertices: (V, 3) float64, read-only.
        faces: (F, 3) int64, read-only; counter-clockwise seen from outside (outward normals).
        symmetry: one of `SYMMETRIES`.
        volume_material: volume of the solid material (the mesh), m^3.
        volume_capacity: interior volume up to the rim for open containers, else None, m^3.
        volume_filled: volume with the cavity filled (material + capacity), m^3.
        extents: (3,) float64 bounding-box edge lengths along x, y, z, read-only.
    """

    family: str
    seed: int
    params: Mapping[str, Any]
    vertices: np.ndarray
    faces: np.ndarray
    symmetry: str
    volume_material: float
    volume_capacity: float | None
    volume_filled: float
    extents: np.ndarray

    @property
    def volume_target(self) -> float:
        """The volume evaluation compares against: `volume_filled` (see the module docstring)."""
        return self.volume_filled

    @property
    def is_container(self) -> bool:
        """True for open containers, which hold `volume_capacity` up to their rim."""
        return self.volume_capacity is not None

    @property
    def has_unique_rotation(self) -> bool:
        """True when the symmetry tag allows a unique rotation (rotation error is reported)."""
        return self.symmetry in UNIQUE_ROTATION_SYMMETRIES

    def to_trimesh(self):
        """The mesh as a `trimesh.Trimesh` (imports trimesh; vertices and faces are copied)."""
        import trimesh

        return trimesh.Trimesh(vertices=self.vertices.copy(), faces=self.faces.copy(), process=False)


def signed_volume(*, vertices: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume of a closed triangle mesh (divergence theorem), positive for outward winding.

    Args:
        vertices: (V, 3) float64.
        faces: (F, 3) integer indices.
    """
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    return float(np.einsum("ij,ij->", v0, np.cross(v1, v2)) / 6.0)


def build_spec(
    *,
    family: str,
    seed: int,
    params: Mapping[str, Any],
    vertices: np.ndarray,
    faces: np.ndarray,
    symmetry: str,
    volume_capacity: float | None = None,
    volume_filled: float | None = None,
) -> ShapeSpec:
    """Centre a finished mesh at its bounding-box centre, measure it and freeze it into a `ShapeSpec`.

    Args:
        vertices: (V, 3) float, any placement; translated so the bounding-box centre is the origin.
        faces: (F, 3) integer indices, outward winding.
        volume_capacity: interior volume up to the rim for open containers, else None.
        volume_filled: volume of the filled object (required for containers; must be None for
            closed objects, whose filled volume is their material volume).
    """
    if symmetry not in SYMMETRIES:
        raise ValueError(f"symmetry must be one of {SYMMETRIES}, got {symmetry!r}")
    if (volume_capacity is None) != (volume_filled is None):
        raise ValueError("volume_capacity and volume_filled must be given together (open containers only)")
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"expected vertices (V, 3) and faces (F, 3), got {vertices.shape} and {faces.shape}")
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    vertices = vertices - (lo + hi) / 2.0
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    extents = hi - lo
    volume_material = signed_volume(vertices=vertices, faces=faces)
    if volume_material <= 0.0:
        raise ValueError(f"{family} (seed {seed}) has non-positive signed volume {volume_material}: wrong winding")
    vertices = np.ascontiguousarray(vertices)
    faces = np.ascontiguousarray(faces)
    for array in (vertices, faces, extents):
        array.setflags(write=False)
    return ShapeSpec(
        family=family,
        seed=int(seed),
        params=dict(params),
        vertices=vertices,
        faces=faces,
        symmetry=symmetry,
        volume_material=volume_material,
        volume_capacity=None if volume_capacity is None else float(volume_capacity),
        volume_filled=volume_material if volume_filled is None else float(volume_filled),
        extents=extents,
    )
