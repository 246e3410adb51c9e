"""Safety checks of a .npz archive *before* numpy reads it: no pickles, no huge allocations, no bombs.

`np.load` trusts an array's header: a member that claims shape (10**12, 3) makes numpy allocate that
much before it notices the data is missing, and a deflated member may expand ~1000-fold. The
checks here read only the zip directory and each member's small .npy header:

- every member's declared uncompressed size must be plausible for its compressed size (stored:
  equal; deflate: at most ~1032:1, the format's limit) and within the archive's size;
- the sum of the declared uncompressed sizes must not exceed `max_total_bytes` (when given), which
  bounds what reading the archive can allocate (zipfile never returns more than the declared size);
- an array's header must not claim more bytes than its member holds, and must not be an object
  array (those would need pickle).
"""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from pointstn.errors import PointstnError

__all__ = ["NPZ_READ_ERRORS", "check_npz_members"]

# What numpy/zipfile raise on damaged archives (NotImplementedError: unsupported zip features;
# RuntimeError: encrypted members).
NPZ_READ_ERRORS = (
    OSError, ValueError, EOFError, OverflowError, KeyError, zipfile.BadZipFile, zlib.error,
    NotImplementedError, RuntimeError,
)  # fmt: skip
_DEFLATE_MAX_RATIO = 1032


def _plausible_member_size(info: zipfile.ZipInfo, archive_size: int) -> bool:
    """Whether a member's declared sizes can be real (bounds what numpy will allocate for it)."""
    if info.compress_size > archive_size:
        return False
    if info.compress_type == zipfile.ZIP_STORED:
        return info.file_size == info.compress_size
    if info.compress_type == zipfile.ZIP_DEFLATED:
        return info.file_size <= _DEFLATE_MAX_RATIO * info.compress_size + 1024
    return True


def check_npz_members(path: str | os.PathLike[str], *, shown: str, max_total_bytes: int | None = None,
                      limit_name: str = "") -> None:
    """Raise a one-line PointstnError naming `shown` if the archive at `path` is unsafe to np.load.

    Args:
        path: the .npz file.
        shown: how to name the file in messages.
        max_total_bytes: bound on the sum of the members' uncompressed sizes (None: no bound).
        limit_name: the constant behind `max_total_bytes`, named in the message (e.g. "MAX_OBJECT_BYTES").
    """
    try:
        archive_size = os.path.getsize(path)
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            for info in members:
                if not _plausible_member_size(info, archive_size):
                    raise PointstnError(
                        f"{shown}: archive member {info.filename} declares {info.file_size} bytes from "
                        f"{info.compress_size} compressed bytes (corrupt file)"
                    )
            total = sum(info.file_size for info in members)
            if max_total_bytes is not None and total > max_total_bytes:
                named = f" ({limit_name})" if limit_name else ""
                raise PointstnError(
                    f"{shown}: refused: the archive expands to {total} bytes, more than the limit of "
                    f"{max_total_bytes} bytes{named} (a decompression bomb or a wrong file)"
                )
            for info in members:
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                if dtype.hasobject:
                    raise PointstnError(f"{shown}: {info.filename} is an object array; refusing to unpickle it")
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
    except NPZ_READ_ERRORS as exc:
        raise PointstnError(f"{shown}: not a valid .npz archive ({type(exc).__name__}: {exc})") from None
