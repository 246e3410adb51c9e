"""Per-corner render attributes of a triangle mesh: positions, shading normals, texture coordinates.

The mesh is "unwelded" (every triangle gets its own three corners) so texture coordinates can be
chosen per triangle without seams:
- ``box`` projection: each triangle takes the two object axes orthogonal to the dominant axis of its
  normal (a pattern printed on each side, like a box's faces);
- ``cylinder`` projection: u = angle about object +z (in turns), v = height. A triangle that straddles
  the u = 0/1 seam gets its small u values shifted by one turn, and u repeats an integer number of
  times around, so the REPEAT-wrapped texture continues across the seam.
Coordinates are relative to the object's longest bounding-box edge, so a pattern covers a similar
fraction of every object regardless of its metric size.

Shading normals use a crease angle: a corner's normal averages (area-weighted) only the faces at
its vertex whose normals are within ``crease_deg`` of its own face's normal, so curved surfaces
shade smoothly while box edges and cylinder rims stay sharp.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UV_PROJECTIONS: tuple[str, ...] = ("box", "cylinder")


@dataclass(frozen=True, eq=False)
class SurfaceAttributes:
    """Unwelded corners: F triangles -> 3F corners, triangle i uses corners 3i, 3i+1, 3i+2.

    positions: (3F, 3) float64 object frame; normals: (3F, 3) float64 unit; uv: (3F, 2) float64.
    """

    positions: np.ndarray
    normals: np.ndarray
    uv: np.ndarray


def check_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert: vertices (V, 3) float64 finite, faces (F, 3) int64 indices into V."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise ValueError(f"vertices must have shape (V, 3) with V > 0, got {vertices.shape}")
    if not np.all(np.isfinite(vertices)):
        raise ValueError("vertices contain NaN or infinite values")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise ValueError(f"faces must have shape (F, 3) with F > 0, got {faces.shape}")
    if not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must hold integer vertex indices, got dtype {faces.dtype}")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"faces index vertices out of range [0, {len(vertices)})")
    return vertices, faces.astype(np.int64)


def _normalize(vectors: np.ndarray) -> np.ndarray:
    length = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(length, 1e-300)


def crease_normals(faces: np.ndarray, face_cross: np.ndarray, *, crease_deg: float) -> np.ndarray:
    """Per-corner shading normals (3F, 3): at corner (f, k) the area-weighted mean of the normals
    of the faces sharing that vertex whose normal is within ``crease_deg`` of face f's normal.

    faces: (F, 3) int; face_cross: (F, 3) un-normalized face normals (2 x area x unit normal).
    """
    face_normals = _normalize(face_cross)
    corner_vertex = faces.reshape(-1)  # (3F,)
    order = np.argsort(corner_vertex, kind="stable")  # corners grouped by vertex
    counts = np.bincount(corner_vertex, minlength=int(corner_vertex.max()) + 1)
    group_start = np.cumsum(counts) - counts
    # Every ordered pair (corner, other corner at the same vertex), including itself.
    repeats = counts[corner_vertex]
    left = np.repeat(np.arange(len(corner_vertex)), repeats)
    offset = np.arange(len(left)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    right = order[group_start[corner_vertex[left]] + offset]
    left_face, right_face = left // 3, right // 3
    similar = np.einsum("pc,pc->p", face_normals[left_face], face_normals[right_face]) >= np.cos(np.radians(crease_deg))
    summed = np.stack(
        [
            np.bincount(
                left[similar],
                weights=face_cross[right_face[similar], c],
                minlength=len(corner_vertex),
            )
            for c in range(3)
        ],
        axis=1,
    )
    return _normalize(summed)


@dataclass(frozen=True, eq=False)
class ShadingGeometry:
    """The appearance-independent part of ``SurfaceAttributes`` (cacheable per mesh).

    corners: (F, 3, 3) object-frame corner positions; normals: (F, 3, 3) shading normals;
    face_normals: (F, 3) unit; unit_corners: (F, 3, 3) corners centred on the bounding-box centre
    and divided by the longest bounding-box edge.
    """

    corners: np.ndarray
    normals: np.ndarray
    face_normals: np.ndarray
    unit_corners: np.ndarray


def shading_geometry(vertices: np.ndarray, faces: np.ndarray, *, crease_deg: float = 35.0) -> ShadingGeometry:
    """Unweld a mesh (V, 3) / (F, 3) and compute its crease-angle shading normals."""
    vertices, faces = check_mesh(vertices, faces)
    corners = vertices[faces]  # (F, 3, 3)
    face_cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # 2 * area * normal
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    extent = max(float((high - low).max()), 1e-12)
    return ShadingGeometry(
        corners=corners,
        normals=crease_normals(faces, face_cross, crease_deg=crease_deg).reshape(-1, 3, 3),
        face_normals=_normalize(face_cross),
        unit_corners=(corners - (low + high) / 2) / extent,
    )


def texture_coordinates(geometry: ShadingGeometry, *, projection: str, repeats: float) -> np.ndarray:
    """Per-corner UVs (3F, 2) by the box or cylinder projection (module docstring).

    repeats: texture repeats across the longest bounding-box edge (rounded to an integer >= 1 around
    the cylinder so the seam is invisible).
    """
    if projection not in UV_PROJECTIONS:
        raise ValueError(f"unknown uv projection {projection!r}; valid projections are {UV_PROJECTIONS}")
    centred = geometry.unit_corners
    if projection == "box":
        axis = np.argmax(np.abs(geometry.face_normals), axis=1)  # (F,)
        other = np.array([[1, 2], [0, 2], [0, 1]])[axis]  # (F, 2)
        uv = np.take_along_axis(centred, other[:, None, :].repeat(3, axis=1), axis=2) * repeats
    else:
        turns = np.arctan2(centred[..., 1], centred[..., 0]) / (2 * np.pi) % 1.0  # (F, 3)
        straddles = turns.max(axis=1) - turns.min(axis=1) > 0.5
        turns = np.where(straddles[:, None] & (turns < 0.5), turns + 1.0, turns)
        around = max(1.0, float(np.round(repeats * np.pi)))  # the perimeter is ~pi x the extent
        uv = np.stack([turns * around, (centred[..., 2] + 0.5) * repeats], axis=-1)
    return uv.reshape(-1, 2)


def surface_attributes(
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    projection: str,
    repeats: float,
    crease_deg: float = 35.0,
) -> SurfaceAttributes:
    """Unweld a mesh (V, 3) / (F, 3) and compute its shading normals and UVs (module docstring)."""
    geometry = shading_geometry(vertices, faces, crease_deg=crease_deg)
    return SurfaceAttributes(
        positions=geometry.corners.reshape(-1, 3),
        normals=geometry.normals.reshape(-1, 3),
        uv=texture_coordinates(geometry, projection=projection, repeats=repeats),
    )
