"""Point clouds as .npz: exact, fast, and loadable with ``np.load(..., allow_pickle=False)``.

Layout (arrays of one uncompressed .npz archive):
    points     (N, 3) float32 or float64
    normals    (N, 3) float32 or float64    (only if the cloud has normals)
    colors     (N, 3) uint8                 (only if the cloud has colors)
    meta_json  0-d unicode string: a JSON object (never a pickled object)

The path is used exactly as given (numpy's habit of appending ".npz" is not applied). Saving is
atomic (`pointstn.io.atomic.atomic_write`). Loading checks every array header against the
archive's sizes before reading, so a corrupt or hostile file cannot trigger a huge allocation.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from pointstn.errors import PointstnError
from pointstn.io.archive import NPZ_READ_ERRORS, check_npz_members
from pointstn.io.atomic import atomic_write
from pointstn.io.cloud import PointCloud

__all__ = ["load_cloud_npz", "save_cloud_npz"]

_ARRAY_KEYS = ("points", "normals", "colors")
_META_KEY = "meta_json"


def _meta_to_json(meta: dict[str, Any]) -> str:
    if not isinstance(meta, dict):
        raise PointstnError(f"meta must be a dict, got {type(meta).__name__}")
    try:
        text = json.dumps(meta, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise PointstnError(f"meta is not JSON-serializable: {exc}") from None
    if json.loads(text) != meta:
        raise PointstnError(
            "meta would change in a JSON round trip (tuples become lists, non-string keys become "
            "strings); pass lists and string keys"
        )
    return text


def save_cloud_npz(
    path: str | os.PathLike[str], cloud: PointCloud, *, meta: dict[str, Any] | None = None
) -> None:
    """Saves `cloud` (and a JSON-serializable `meta` dict) to `path` atomically.

    Raises:
        PointstnError: `meta` not representable as JSON (it must survive a round trip unchanged:
            string keys, lists not tuples, finite floats), or the file cannot be written.
    """
    if not isinstance(cloud, PointCloud):
        raise PointstnError(f"save_cloud_npz expects a PointCloud, got {type(cloud).__name__}")
    arrays = {key: getattr(cloud, key) for key in _ARRAY_KEYS if getattr(cloud, key) is not None}
    arrays[_META_KEY] = np.array(_meta_to_json({} if meta is None else meta))
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)


def load_cloud_npz(path: str | os.PathLike[str]) -> tuple[PointCloud, dict[str, Any]]:
    """Loads a cloud saved by `save_cloud_npz`.

    Returns:
        (cloud, meta): the PointCloud (arrays as saved, bit-exact) and the meta dict ({} if none).

    Raises:
        PointstnError: missing file, corrupt archive, object arrays, missing or unexpected keys,
            wrong shapes or dtypes, non-finite values, invalid meta JSON (names the file).
    """
    shown = os.fspath(path)
    check_npz_members(path, shown=shown)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            missing = {"points", _META_KEY} - keys
            unexpected = keys - {*_ARRAY_KEYS, _META_KEY}
            if missing or unexpected:
                raise PointstnError(
                    f"{shown}: not a pointstn point-cloud .npz (missing {sorted(missing)}, "
                    f"unexpected {sorted(unexpected)})"
                )
            arrays = {key: archive[key] for key in _ARRAY_KEYS if key in keys}
            meta_array = archive[_META_KEY]
    except PointstnError:
        raise
    except NPZ_READ_ERRORS as exc:
        raise PointstnError(f"{shown}: not a valid .npz point cloud ({type(exc).__name__}: {exc})") from None
    if meta_array.shape != () or meta_array.dtype.kind != "U":
        raise PointstnError(
            f"{shown}: {_META_KEY} must be a 0-d string, got {meta_array.dtype} {meta_array.shape}"
        )
    try:
        meta = json.loads(str(meta_array))
    except ValueError as exc:
        raise PointstnError(f"{shown}: {_META_KEY} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise PointstnError(f"{shown}: {_META_KEY} must hold a JSON object, got {type(meta).__name__}")
    try:
        return PointCloud(**arrays), meta
    except PointstnError as exc:
        raise PointstnError(f"{shown}: {exc}") from None
