"""Several files that belong together (the PLY, NPZ, PNG, HTML and JSON of one cloud): all or nothing.

`write_all_or_nothing` stages every file in a hidden folder next to its destination (same file
system), and only when every writer has succeeded moves them to their final names, one `os.replace`
each. If a writer fails (disk full, a bad value), nothing under a final name has changed: files that
an earlier run wrote there are left exactly as they were, and the staging folder is removed. Only a
failure of the renames themselves (no space is needed for them) could leave a group half replaced.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from pointstn.errors import PointstnError

__all__ = ["STAGING_PREFIX", "write_all_or_nothing"]

STAGING_PREFIX = ".pointstn-staging-"


def write_all_or_nothing(outputs: Sequence[tuple[Path, Callable[[Path], None]]]) -> list[Path]:
    """Run each `writer(path)` into a staging folder, then move every file to its `path`.

    Args:
        outputs: (destination, writer) pairs; a writer writes exactly the path it is given (its name
            and suffix are the destination's, so writers that infer the format from it still work).

    Returns:
        The destinations, in order.

    Raises:
        Whatever a writer raised (after the clean-up), or PointstnError if a staging folder cannot be
        made or a file cannot be moved into place.
    """
    staging: dict[Path, Path] = {}  # destination folder -> its staging folder
    staged: list[tuple[Path, Path]] = []
    try:
        for path, writer in outputs:
            path = Path(path)
            folder = path.parent
            if folder not in staging:
                try:
                    staging[folder] = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
                except OSError as exc:
                    raise PointstnError(f"cannot write {path}: {exc.strerror or exc}") from None
            temp = staging[folder] / path.name
            writer(temp)
            staged.append((temp, path))
        for temp, path in staged:
            try:
                os.replace(temp, path)
            except OSError as exc:
                raise PointstnError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        for folder in staging.values():
            shutil.rmtree(folder, ignore_errors=True)
    return [path for _, path in staged]
