"""Load one user mesh into the canonical object frame, validated and repaired.

Canonical frame (DESIGN.md section 2): metres, +z up, origin at the axis-aligned bounding-box
centre; otherwise the file's own axes are kept (no re-orientation, no normalization).

Order of operations on the file's coordinates `p`:
1. `p * source.scale` (a URDF's `scale`; ones otherwise);
2. `* UNIT_SCALE[units]` to metres (`m` 1, `cm` 0.01, `mm` 0.001) — for URDF meshes `units`
   describes the coordinates after the URDF scale, which URDF defines in metres;
3. for `up="y"`: the proper rotation of +90 degrees about +x, `(x, y, z) -> (x, -z, y)`, which takes
   +y to +z (and +z to -y), det = +1 (so a y-up file such as glTF, whose front is +z, faces -y);
4. repair (`pointstn.data.ingest.repair`), then translate the bounding-box centre to the origin.

Loading uses `trimesh.load(path, force="mesh", process=False)`, which flattens GLB scenes into one
mesh with their node transforms applied. `process=False` is deliberate: trimesh's processing drops
NaN vertices silently and merges vertices without telling us, so the raw arrays are validated
first and the processing steps run explicitly in `repair_mesh`, where each is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pointstn.data.ingest.discover import MESH_SUFFIXES, MeshSource, object_name
from pointstn.data.ingest.errors import DegenerateMeshError, MeshFileError
from pointstn.data.ingest.preflight import check_file
from pointstn.data.ingest.repair import DEFAULT_MAX_FILL_AREA_FRACTION, repair_mesh
from pointstn.errors import PointstnError

UNIT_SCALE = {"m": 1.0, "cm": 0.01, "mm": 0.001}
UP_AXES = ("z", "y")
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
DEFAULT_MAX_FACES = 2_000_000
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024
# A closed mesh enclosing less than this fraction of its bounding box is treated as having no volume.
MIN_VOLUME_FRACTION = 1e-6
# An extent below this fraction of the longest one counts as zero (a flat mesh).
MIN_EXTENT_FRACTION = 1e-9
# Vertices whose smallest principal spread is below this fraction of the largest lie in one plane.
MIN_THICKNESS_FRACTION = 1e-9


@dataclass(frozen=True, eq=False)
class IngestedObject:
    """One user mesh in the canonical frame (metres, +z up, origin at the bounding-box centre).

    Attributes:
        name: unique object name (from discovery).
        source: the mesh file's path.
        vertices: (V, 3) float64, read-only.
        faces: (F, 3) int64, read-only; outward winding when `watertight`.
        watertight: closed and consistently wound after repair.
        volume: solid volume in m^3 when watertight, else None.
        volume_note: "exact (watertight mesh)", or why `volume` is None.
        repairs: what repair changed, in order (empty when nothing).
        extents: (3,) float64 bounding-box edge lengths along x, y, z in metres, read-only.
        family: the object family ("user" unless the caller names one).
        symmetry: "unknown" (the symmetry of a user mesh is not analysed).
        units: the declared units of the file ("m", "cm" or "mm").
        up: the declared up axis of the file ("z" or "y").
    """

    name: str
    source: str
    vertices: np.ndarray
    faces: np.ndarray
    watertight: bool
    volume: float | None
    volume_note: str
    repairs: tuple[str, ...]
    extents: np.ndarray
    family: str = "user"
    symmetry: str = "unknown"
    units: str = "m"
    up: str = "z"

    def to_trimesh(self):
        """The mesh as a `trimesh.Trimesh` (imports trimesh; vertices and faces are copied)."""
        import trimesh

        return trimesh.Trimesh(vertices=self.vertices.copy(), faces=self.faces.copy(), process=False)


def check_units(units: str) -> float:
    """Metres per file unit for `units`.

    Raises:
        PointstnError: unknown units (the message lists the valid ones).
    """
    if units not in UNIT_SCALE:
        raise PointstnError(f"unknown units {units!r}; declare one of: {', '.join(UNIT_SCALE)}")
    return UNIT_SCALE[units]


def up_rotation(up: str) -> np.ndarray:
    """(3, 3) proper rotation taking the declared up axis to +z (identity for "z").

    Raises:
        PointstnError: unknown up axis (the message lists the valid ones).
    """
    if up not in UP_AXES:
        raise PointstnError(f"unknown up axis {up!r}; declare one of: {', '.join(UP_AXES)}")
    return np.eye(3) if up == "z" else Y_UP_TO_Z_UP.copy()


def load_object(
    source: MeshSource | str | Path,
    *,
    units: str,
    up: str,
    family: str = "user",
    max_faces: int = DEFAULT_MAX_FACES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_fill_area_fraction: float = DEFAULT_MAX_FILL_AREA_FRACTION,
) -> IngestedObject:
    """Load, validate, convert and repair one mesh (see the module docstring).

    Args:
        source: a discovered `MeshSource`, or a path (named after its stem, scale ones).
        units: the file's length unit: "m", "cm" or "mm".
        up: the file's up axis: "z" or "y".
        family: family label stored on the object.
        max_faces: largest face count accepted (declared in a header or loaded).
        max_file_bytes: largest file size accepted.
        max_fill_area_fraction: see `repair_mesh`.

    Raises:
        PointstnError: unknown units or up axis.
        MeshFileError: missing, empty, too large, corrupt or truncated file, or no triangles in it.
        DegenerateMeshError: non-finite vertices, fewer than 4 distinct vertices, a flat mesh, or a
            closed mesh with no volume.
    """
    metres = check_units(units)
    rotation = up_rotation(up)
    if not isinstance(source, MeshSource):
        source = MeshSource(path=Path(source), name=object_name(Path(source).stem))
    path = source.path
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise MeshFileError(f"{path}: unsupported mesh format {path.suffix!r} (supported: {', '.join(MESH_SUFFIXES)})")
    check_file(path, max_faces=max_faces, max_file_bytes=max_file_bytes)
    vertices, faces = _read_triangles(path, max_faces=max_faces)
    vertices = (vertices * np.asarray(source.scale, dtype=np.float64) * metres) @ rotation.T
    _check_shape(path, vertices=vertices, faces=faces)
    repaired = repair_mesh(vertices=vertices, faces=faces, max_fill_area_fraction=max_fill_area_fraction)
    if len(repaired.faces) == 0:
        raise DegenerateMeshError(f"{path}: no face with non-zero area is left after removing degenerate faces")
    lo, hi = repaired.vertices.min(axis=0), repaired.vertices.max(axis=0)
    centred = repaired.vertices - (lo + hi) / 2.0
    extents = hi - lo
    _check_extents(path, extents=extents, stage="after repair")
    if repaired.volume is not None and repaired.volume <= MIN_VOLUME_FRACTION * float(np.prod(extents)):
        raise DegenerateMeshError(
            f"{path}: the closed mesh encloses no volume ({repaired.volume:.3g} m^3 inside a "
            f"{' x '.join(f'{edge:.3g}' for edge in extents)} m box)"
        )
    faces_out = np.ascontiguousarray(repaired.faces, dtype=np.int64)
    centred = np.ascontiguousarray(centred, dtype=np.float64)
    for array in (centred, faces_out, extents):
        array.setflags(write=False)
    return IngestedObject(
        name=source.name,
        source=str(path),
        vertices=centred,
        faces=faces_out,
        watertight=repaired.watertight,
        volume=repaired.volume,
        volume_note=repaired.volume_note,
        repairs=repaired.repairs,
        extents=extents,
        family=family,
        units=units,
        up=up,
    )


def _read_triangles(path: Path, *, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw (V, 3) float64 vertices and (F, 3) int64 faces of a mesh file, validated."""
    import trimesh

    options = {"skip_materials": True} if path.suffix.lower() == ".obj" else {}
    try:
        mesh = trimesh.load(path, file_type=path.suffix.lower()[1:], force="mesh", process=False, **options)
    except Exception as error:  # noqa: BLE001 - any parser failure on a corrupt file is the file's fault
        detail = str(error).strip().splitlines()[0] if str(error).strip() else "no detail"
        kind = path.suffix.lower()
        raise MeshFileError(f"{path}: cannot be read as {kind} ({type(error).__name__}: {detail})") from None
    if not isinstance(mesh, trimesh.Trimesh):
        raise MeshFileError(f"{path}: does not hold a triangle mesh (loaded as {type(mesh).__name__})")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces)
    if len(faces) == 0:
        raise MeshFileError(f"{path}: contains no triangles ({len(vertices)} vertices, 0 faces)")
    if faces.ndim != 2 or faces.shape[1] != 3 or vertices.ndim != 2 or vertices.shape[1] != 3:
        raise MeshFileError(f"{path}: expected (V, 3) vertices and (F, 3) faces, got {vertices.shape}, {faces.shape}")
    if len(faces) > max_faces:
        raise MeshFileError(f"{path}: has {len(faces)} faces, more than the limit max_faces={max_faces}")
    faces = faces.astype(np.int64)
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshFileError(f"{path}: face indices outside [0, {len(vertices)}) (min {faces.min()}, max {faces.max()})")
    bad = int((~np.isfinite(vertices)).any(axis=1).sum())
    if bad:
        raise DegenerateMeshError(f"{path}: {bad} of {len(vertices)} vertices are not finite (NaN or inf)")
    return vertices, faces


def _check_shape(path: Path, *, vertices: np.ndarray, faces: np.ndarray) -> None:
    used = vertices[np.unique(faces)]
    distinct = len(np.unique(used, axis=0))
    if distinct < 4:
        raise DegenerateMeshError(f"{path}: faces use only {distinct} distinct vertices; a solid needs at least 4")
    _check_extents(path, extents=used.max(axis=0) - used.min(axis=0), stage="as loaded")
    spread = np.linalg.svd(used - used.mean(axis=0), compute_uv=False)
    if not spread[-1] > MIN_THICKNESS_FRACTION * spread[0]:
        raise DegenerateMeshError(f"{path}: all {len(used)} used vertices lie in one plane: the mesh is flat")


def _check_extents(path: Path, *, extents: np.ndarray, stage: str) -> None:
    longest = float(extents.max())
    flat = [axis for axis, edge in zip("xyz", extents, strict=True) if not edge > MIN_EXTENT_FRACTION * longest]
    if flat:
        raise DegenerateMeshError(
            f"{path}: zero extent along {', '.join(flat)} ({stage}, canonical frame): the mesh is flat"
        )
