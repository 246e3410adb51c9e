"""Errors of mesh ingestion: every one is a `PointstnError` with a one-line message naming the file.

`ingest` catches them per file, reports them and goes on with the next mesh.
"""

from pointstn.errors import PointstnError


class MeshFileError(PointstnError):
    """A mesh file that is missing, empty, too large, truncated, corrupt or not a triangle mesh."""


class DegenerateMeshError(PointstnError):
    """A mesh that loads but cannot be an object: non-finite vertices, flat, or enclosing no volume."""


class UrdfError(PointstnError):
    """A URDF file that cannot be read, or a mesh reference in it that is refused."""
