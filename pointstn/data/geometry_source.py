"""Where an object's geometry comes from: a procedural family or an ingested mesh file.

Both become an `ObjectGeometry` in the canonical frame (DESIGN.md section 2: metres, +z up, origin at
the bounding-box centre), so the rest of dataset generation does not care which source it was.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pointstn.data.config import DatasetConfig
from pointstn.errors import PointstnError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ObjectGeometry:
    """A watertight (or flagged) triangle mesh with its volumes and provenance.

    vertices: (V, 3) float64 metres; faces: (F, 3) int64.
    volume_target: the volume evaluation compares against (m^3), None when unknown.
    """

    vertices: np.ndarray
    faces: np.ndarray
    symmetry: str
    source: str
    params: Mapping[str, Any]
    extents: np.ndarray
    volume_target: float | None
    volume_material: float | None
    volume_capacity: float | None
    volume_note: str

    def sample_surface(self, count: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` area-uniform surface samples (count, 3) and their unit outward face normals."""
        import trimesh

        mesh = trimesh.Trimesh(vertices=self.vertices, faces=self.faces, process=False)
        points, face_index = trimesh.sample.sample_surface(mesh, count, seed=seed)
        return np.asarray(points), np.asarray(mesh.face_normals[face_index])


def plan_sources(config: DatasetConfig) -> tuple[dict[str, list[tuple[str, Any]]], list[tuple[str, str]]]:
    """Objects grouped by family: {family: [(object_id, source), ...]}, plus discovery failures."""
    if config.source == "procedural":
        from pointstn.data.shapes import FAMILIES

        families = config.families or tuple(FAMILIES)
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise PointstnError(f"unknown shape family '{unknown[0]}'; valid: {', '.join(FAMILIES)}")
        groups = {f: [(f"{f}_{i:04d}", f) for i in range(config.objects_per_family)] for f in families}
        return groups, []

    from pointstn.data.ingest import discover

    found = discover(config.meshes.spec)
    for path, reason in found.skipped:
        log.info("skipped %s: %s", path, reason)
    family = config.meshes.family or "user"
    return {family: [(source.name, source) for source in found.sources]}, list(found.refused)


def load_geometry(task, config: DatasetConfig) -> ObjectGeometry:
    """The geometry of one planned object (`task` is a `pointstn.data.generate.ObjectTask`)."""
    if config.source == "procedural":
        from pointstn.data.shapes import generate_shape

        shape = generate_shape(task.family, task.seed)
        return ObjectGeometry(
            vertices=np.asarray(shape.vertices, dtype=np.float64),
            faces=np.asarray(shape.faces, dtype=np.int64),
            symmetry=shape.symmetry,
            source=f"procedural:{shape.family}:{shape.seed}",
            params=dict(shape.params),
            extents=np.asarray(shape.extents, dtype=np.float64),
            volume_target=float(shape.volume_target),
            volume_material=float(shape.volume_material),
            volume_capacity=None if shape.volume_capacity is None else float(shape.volume_capacity),
            volume_note="exact (watertight procedural mesh); containers: filled = material + capacity",
        )

    from pointstn.data.ingest import load_object

    obj = load_object(task.source, units=config.meshes.units, up=config.meshes.up, family=task.family)
    return ObjectGeometry(
        vertices=np.asarray(obj.vertices, dtype=np.float64),
        faces=np.asarray(obj.faces, dtype=np.int64),
        symmetry=obj.symmetry,
        source=str(obj.source),
        params={"repairs": list(obj.repairs), "units": config.meshes.units, "up": config.meshes.up},
        extents=np.asarray(obj.extents, dtype=np.float64),
        volume_target=obj.volume,
        volume_material=obj.volume,
        volume_capacity=None,
        volume_note=obj.volume_note,
    )
