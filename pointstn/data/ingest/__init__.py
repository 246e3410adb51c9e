"""Mesh ingestion: turn a user's own meshes (.obj/.stl/.ply/.glb/.off, or URDF-referenced ones) into
validated, repaired objects in the canonical frame (metres, +z up, origin at the bounding-box centre).

    report = ingest("my_meshes/", units="mm", up="y")
    for obj in report.objects: ...            # IngestedObject
    for path, reason in report.failures: ...  # reported and skipped, never fatal

Modules: `discover` (finding files, names), `urdf` (safe URDF reading), `preflight` (header and size
checks before parsing), `load` (units, up axis, canonical frame), `repair` (watertightness),
`ingest` (the per-file error boundary). trimesh is imported only when a mesh is loaded.
"""

from pointstn.data.ingest.discover import (
    MESH_SUFFIXES,
    Discovery,
    MeshSource,
    discover,
    discover_meshes,
    pybullet_random_urdfs,
)
from pointstn.data.ingest.errors import DegenerateMeshError, MeshFileError, UrdfError
from pointstn.data.ingest.ingest import IngestReport, ingest, ingest_sources
from pointstn.data.ingest.load import (
    UNIT_SCALE,
    UP_AXES,
    Y_UP_TO_Z_UP,
    IngestedObject,
    load_object,
)
from pointstn.data.ingest.repair import EXACT_NOTE, RepairResult, repair_mesh

__all__ = [
    "EXACT_NOTE",
    "MESH_SUFFIXES",
    "UNIT_SCALE",
    "UP_AXES",
    "Y_UP_TO_Z_UP",
    "DegenerateMeshError",
    "Discovery",
    "IngestReport",
    "IngestedObject",
    "MeshFileError",
    "MeshSource",
    "RepairResult",
    "UrdfError",
    "discover",
    "discover_meshes",
    "ingest",
    "ingest_sources",
    "load_object",
    "pybullet_random_urdfs",
    "repair_mesh",
]
