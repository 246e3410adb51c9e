"""Ingest many meshes: one bad mesh is reported and skipped, never the end of the run."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pointstn.data.ingest.discover import MeshSource, discover
from pointstn.data.ingest.load import (
    DEFAULT_MAX_FACES,
    DEFAULT_MAX_FILE_BYTES,
    IngestedObject,
    check_units,
    load_object,
    up_rotation,
)
from pointstn.data.ingest.repair import DEFAULT_MAX_FILL_AREA_FRACTION
from pointstn.errors import PointstnError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestReport:
    """The outcome of an ingestion run.

    Attributes:
        objects: the meshes that loaded, in discovery order.
        failures: (path, one-line reason) for every mesh, URDF or URDF reference that could not be used.
        skipped: (path, reason) for files that are not meshes (unsupported suffix).
    """

    objects: list[IngestedObject]
    failures: list[tuple[str, str]]
    skipped: list[tuple[str, str]]


def ingest(
    spec: str | Path,
    *,
    units: str,
    up: str,
    family: str | None = None,
    root: str | Path | None = None,
    max_faces: int = DEFAULT_MAX_FACES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_fill_area_fraction: float = DEFAULT_MAX_FILL_AREA_FRACTION,
    progress: bool = False,
) -> IngestReport:
    """Discover the meshes of `spec` (see `discover`) and load each one (see `load_object`).

    Args:
        spec: folder, glob, mesh file or URDF file.
        units: "m", "cm" or "mm", for every mesh.
        up: "z" or "y", for every mesh.
        family: family label of every object ("user" when None).
        progress: show a tqdm progress bar.

    Raises:
        PointstnError: bad `units`/`up`, or `spec` matches no mesh; per-mesh problems are reported in
            `failures` instead.
    """
    check_units(units)
    up_rotation(up)
    found = discover(spec, root=root)
    report = ingest_sources(
        found.sources, units=units, up=up, family=family, max_faces=max_faces,
        max_file_bytes=max_file_bytes, max_fill_area_fraction=max_fill_area_fraction, progress=progress,
    )  # fmt: skip
    for path, reason in found.refused:
        logger.warning("refused %s", reason)
    return IngestReport(
        objects=report.objects, failures=list(found.refused) + report.failures, skipped=list(found.skipped)
    )


def ingest_sources(
    sources: Iterable[MeshSource],
    *,
    units: str,
    up: str,
    family: str | None = None,
    max_faces: int = DEFAULT_MAX_FACES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_fill_area_fraction: float = DEFAULT_MAX_FILL_AREA_FRACTION,
    progress: bool = False,
) -> IngestReport:
    """Load every source (e.g. from `discover_meshes` or `pybullet_random_urdfs`), catching per-file errors."""
    check_units(units)
    up_rotation(up)
    sources = list(sources)
    objects: list[IngestedObject] = []
    failures: list[tuple[str, str]] = []
    if progress:
        from tqdm import tqdm

        sources = tqdm(sources, desc="ingest meshes", unit="mesh")
    for source in sources:
        try:
            objects.append(
                load_object(
                    source, units=units, up=up, family=family or "user", max_faces=max_faces,
                    max_file_bytes=max_file_bytes, max_fill_area_fraction=max_fill_area_fraction,
                )
            )
        except PointstnError as error:
            failures.append((str(source.path), str(error)))
            logger.warning("skipped %s", error)
        except Exception as error:  # a bug or a crash on one file must not end the run
            failures.append((str(source.path), f"{source.path}: unexpected {type(error).__name__}: {error}"))
            logger.exception("skipped %s after an unexpected error", source.path)
    return IngestReport(objects=objects, failures=failures, skipped=[])
