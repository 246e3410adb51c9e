"""Make a triangle mesh a closed solid where that can be done honestly, and say what was done.

Steps, each recorded in `RepairResult.repairs` when it changed something:
1. drop unreferenced vertices; merge vertices at the same position (trimesh's `merge_vertices`,
   positions rounded to `trimesh.tol.merge` = 1e-8, here metres; UVs and normals are ignored, so a
   textured mesh split along its UV seams is stitched back together);
2. drop degenerate faces (zero area: height below 1e-8) and duplicate faces (same three vertices in
   any order);
3. keep the largest connected component (faces connected through shared edges), largest by
   *surface area* — area is defined for open pieces too, while volume is not; ties go to the
   component holding the lowest face index. The number of dropped components and their share of
   the area are recorded;
4. make the winding consistent (`trimesh.repair.fix_winding`);
5. fill holes: every boundary loop that is a simple cycle is closed, a 3-edge loop by one triangle,
   a longer one by a fan around a new vertex at the loop's mean position, wound opposite to the
   loop's existing faces. Holes are left open (and the mesh stays not watertight) when an edge is
   shared by more than two faces, when boundary loops touch (a vertex on several holes), or when
   the fill would add more than `max_fill_area_fraction` of the surface area: a large cap is a
   guess about the shape, not a repair;
6. if the closed mesh has negative signed volume it is inside out: all faces are flipped.

A mesh is `watertight` when every edge is shared by exactly two faces and the winding is consistent;
only then is `volume` (divergence theorem, m^3) returned. Otherwise `volume` is None and
`volume_note` says why: a volume is never returned for an open mesh. Self-intersections are not
detected; a self-intersecting closed mesh gets the signed volume its winding defines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT_NOTE = "exact (watertight mesh)"
DEFAULT_MAX_FILL_AREA_FRACTION = 0.1


@dataclass(frozen=True)
class RepairResult:
    """A repaired mesh (same units and placement as the input).

    Attributes:
        vertices: (V, 3) float64.
        faces: (F, 3) int64, outward winding when `watertight`.
        watertight: closed (every edge shared by two faces) and consistently wound.
        volume: enclosed volume when watertight, else None.
        volume_note: `EXACT_NOTE`, or why the volume is unknown.
        repairs: what was changed, in order; empty when nothing was.
    """

    vertices: np.ndarray
    faces: np.ndarray
    watertight: bool
    volume: float | None
    volume_note: str
    repairs: tuple[str, ...]


def repair_mesh(
    *,
    vertices: np.ndarray,
    faces: np.ndarray,
    max_fill_area_fraction: float = DEFAULT_MAX_FILL_AREA_FRACTION,
) -> RepairResult:
    """Repair a triangle mesh as described in the module docstring.

    Args:
        vertices: (V, 3) finite float coordinates.
        faces: (F, 3) integer indices into `vertices`.
        max_fill_area_fraction: largest total hole-fill area, as a fraction of the mesh's area.
    """
    import trimesh

    repairs: list[str] = []
    mesh = trimesh.Trimesh(
        vertices=np.asarray(vertices, dtype=np.float64), faces=np.asarray(faces, dtype=np.int64), process=False
    )
    count = len(mesh.vertices)
    mesh.remove_unreferenced_vertices()
    _record(repairs, count - len(mesh.vertices), "removed {} unreferenced vertices")
    count = len(mesh.vertices)
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    _record(repairs, count - len(mesh.vertices), "merged {} duplicate vertices")
    keep = mesh.nondegenerate_faces()
    mesh.update_faces(keep)
    _record(repairs, int((~keep).sum()), "removed {} degenerate faces")
    keep = mesh.unique_faces()
    mesh.update_faces(keep)
    _record(repairs, int((~keep).sum()), "removed {} duplicate faces")
    if len(mesh.faces) == 0:
        return RepairResult(
            vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=np.int64), watertight=False,
            volume=None, volume_note="unknown: no faces with area left", repairs=tuple(repairs),
        )  # fmt: skip
    _keep_largest_component(mesh, repairs)
    mesh.remove_unreferenced_vertices()
    before = mesh.faces.copy()
    trimesh.repair.fix_winding(mesh)
    _record(repairs, int((mesh.faces != before).any(axis=1).sum()), "reversed the winding of {} faces")
    problem = None
    if not mesh.is_watertight:
        new_vertices, new_faces, message, problem = _fill_holes(
            vertices=mesh.vertices, faces=mesh.faces, area=float(mesh.area), max_fraction=max_fill_area_fraction
        )
        if message:
            mesh = trimesh.Trimesh(vertices=new_vertices, faces=new_faces, process=False)
            repairs.append(message)
    watertight = bool(mesh.is_watertight and mesh.is_winding_consistent)
    if not watertight:
        problem = problem or ("inconsistent winding" if mesh.is_watertight else "open boundary remains")
        return RepairResult(
            vertices=np.asarray(mesh.vertices, dtype=np.float64), faces=np.asarray(mesh.faces, dtype=np.int64),
            watertight=False, volume=None, volume_note=f"unknown: not watertight after repair ({problem})",
            repairs=tuple(repairs),
        )  # fmt: skip
    volume = _signed_volume(np.asarray(mesh.triangles))
    if volume < 0.0:
        mesh.invert()
        volume = -volume
        repairs.append("flipped all faces (the mesh was inside out)")
    return RepairResult(
        vertices=np.asarray(mesh.vertices, dtype=np.float64), faces=np.asarray(mesh.faces, dtype=np.int64),
        watertight=True, volume=volume, volume_note=EXACT_NOTE, repairs=tuple(repairs),
    )  # fmt: skip


def _signed_volume(triangles: np.ndarray) -> float:
    """Signed volume of a closed surface from its (F, 3, 3) triangles (divergence theorem)."""
    return float(np.einsum("ij,ij->", triangles[:, 0], np.cross(triangles[:, 1], triangles[:, 2])) / 6.0)


def _record(repairs: list[str], count: int, template: str) -> None:
    if count > 0:
        repairs.append(template.format(count))


def _keep_largest_component(mesh, repairs: list[str]) -> None:
    import trimesh

    components = trimesh.graph.connected_components(
        edges=mesh.face_adjacency, nodes=np.arange(len(mesh.faces)), min_len=1
    )
    if len(components) <= 1:
        return
    areas = mesh.area_faces
    component_areas = np.array([areas[component].sum() for component in components])
    lowest_face = np.array([component.min() for component in components])
    best = max(range(len(components)), key=lambda index: (component_areas[index], -lowest_face[index]))
    keep = np.zeros(len(mesh.faces), dtype=bool)
    keep[components[best]] = True
    dropped_share = 1.0 - component_areas[best] / component_areas.sum()
    mesh.update_faces(keep)
    repairs.append(
        f"kept the largest of {len(components)} connected components by surface area "
        f"(dropped {len(components) - 1} holding {100.0 * dropped_share:.2f}% of the area)"
    )


def _fill_holes(
    *, vertices: np.ndarray, faces: np.ndarray, area: float, max_fraction: float
) -> tuple[np.ndarray, np.ndarray, str | None, str | None]:
    """Close simple boundary loops (see the module docstring).

    Returns:
        (vertices (V', 3), faces (F', 3), repair message or None, problem that prevents filling or None).
    """
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    undirected = np.sort(directed, axis=1)
    _, inverse, uses = np.unique(undirected, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    non_manifold = int((uses > 2).sum())
    if non_manifold:
        return vertices, faces, None, f"{non_manifold} edges shared by more than two faces"
    boundary = directed[uses[inverse] == 1]
    if len(boundary) == 0:
        return vertices, faces, None, None
    starts, start_counts = np.unique(boundary[:, 0], return_counts=True)
    if (start_counts > 1).any() or len(starts) != len(boundary):
        return vertices, faces, None, "boundary loops touch at a vertex"
    following = dict(zip(boundary[:, 0].tolist(), boundary[:, 1].tolist()))
    loops: list[list[int]] = []
    unvisited = set(following)
    for start in sorted(following):
        if start not in unvisited:
            continue
        loop = [start]
        unvisited.discard(start)
        current = following[start]
        while current != start:
            if current not in unvisited:
                return vertices, faces, None, "boundary edges do not form closed loops"
            loop.append(current)
            unvisited.discard(current)
            current = following[current]
        loops.append(loop)
    new_vertices: list[np.ndarray] = []
    new_faces: list[list[int]] = []
    for loop in loops:
        if len(loop) == 3:
            new_faces.append([loop[2], loop[1], loop[0]])
            continue
        centre = len(vertices) + len(new_vertices)
        new_vertices.append(vertices[loop].mean(axis=0))
        new_faces += [[loop[(k + 1) % len(loop)], loop[k], centre] for k in range(len(loop))]
    all_vertices = np.concatenate([vertices, np.asarray(new_vertices).reshape(-1, 3)])
    fill = np.asarray(new_faces, dtype=np.int64)
    corners = all_vertices[fill]
    crosses = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    fill_area = 0.5 * float(np.linalg.norm(crosses, axis=1).sum())
    if fill_area > max_fraction * area:
        return vertices, faces, None, (
            f"holes too large to fill: closing {len(loops)} holes would add {100.0 * fill_area / area:.1f}% "
            f"of the surface area, more than max_fill_area_fraction={max_fraction}"
        )
    message = (
        f"filled {len(loops)} holes ({len(boundary)} boundary edges, {100.0 * fill_area / area:.2f}% of the area added)"
    )
    return all_vertices, np.concatenate([faces, fill]), message, None
