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
import zipfile
import zlib
from typing import Any

import numpy as np

from pointstn.errors import PointstnError
from pointstn.io.atomic import atomic_write
from pointstn.io.cloud import PointCloud

__all__ = ["load_cloud_npz", "save_cloud_npz"]

_ARRAY_KEYS = ("points", "normals", "colors")
_META_KEY = "meta_json"
# What numpy/zipfile raise on damaged archives (NotImplementedError: unsupported zip features;
# RuntimeError: encrypted members).
_READ_ERRORS = (
    OSError, ValueError, EOFError, OverflowError, KeyError, zipfile.BadZipFile, zlib.error,
    NotImplementedError, RuntimeError,
)  # fmt: skip


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


def _plausible_member_size(info: zipfile.ZipInfo, archive_size: int) -> bool:
    """Whether a member's declared sizes can be real (bounds what numpy will allocate for it)."""
    if info.compress_size > archive_size:
        return False
    if info.compress_type == zipfile.ZIP_STORED:
        return info.file_size == info.compress_size
    if info.compress_type == zipfile.ZIP_DEFLATED:  # deflate expands at most ~1032:1
        return info.file_size <= 1032 * info.compress_size + 1024
    return True


def _check_member_sizes(path: str, shown: str) -> None:
    """Rejects array headers that claim more data than their archive member holds."""
    try:
        archive_size = os.path.getsize(path)
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not _plausible_member_size(info, archive_size):
                    raise PointstnError(
                        f"{shown}: archive member {info.filename} declares {info.file_size} bytes from "
                        f"{info.compress_size} compressed bytes (corrupt file)"
                    )
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                if dtype.hasobject:
                    raise PointstnError(
                        f"{shown}: {info.filename} is an object array; refusing to unpickle it"
                    )
                claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if claimed > info.file_size:
                    raise PointstnError(
                        f"{shown}: {info.filename} claims shape {shape} ({claimed} bytes) but holds "
                        f"{info.file_size} bytes (corrupt file)"
                    )
    except PointstnError:
        raise
    except FileNotFoundError:
        raise PointstnError(f"cannot read {shown}: no such file") from None
    except IsADirectoryError:
        raise PointstnError(f"cannot read {shown}: it is a directory") from None
    except _READ_ERRORS as exc:
        raise PointstnError(f"{shown}: not a valid .npz point cloud ({type(exc).__name__}: {exc})") from None


def load_cloud_npz(path: str | os.PathLike[str]) -> tuple[PointCloud, dict[str, Any]]:
    """Loads a cloud saved by `save_cloud_npz`.

    Returns:
        (cloud, meta): the PointCloud (arrays as saved, bit-exact) and the meta dict ({} if none).

    Raises:
        PointstnError: missing file, corrupt archive, object arrays, missing or unexpected keys,
            wrong shapes or dtypes, non-finite values, invalid meta JSON (names the file).
    """
    shown = os.fspath(path)
    _check_member_sizes(path, shown)
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
    except _READ_ERRORS as exc:
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
