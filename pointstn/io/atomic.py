"""Atomic file writes: a file appears under its final name complete, or not at all.

`atomic_write` writes into a temporary file in the destination directory, flushes and fsyncs it,
then renames it over the destination with `os.replace` (atomic on POSIX and on Windows/NTFS within
one volume) and fsyncs the directory so the rename itself survives a power cut. If anything fails,
the temporary file is removed and a file that already existed at the destination is left untouched.

Failures of the file system (missing or read-only directory, disk full, quota, I/O error) surface as
a one-line `PointstnError` that names the destination; when the storage refused the data (disk full,
quota, file too large, I/O error, read-only file system) it is the subclass `StorageError`, so a long
job can tell "this machine cannot write" (stop) from "this one item is bad" (skip it). Other
exceptions raised inside the ``with`` block propagate unchanged (after the clean-up).

Notes:
- A symlink at the destination is replaced by a regular file; the file it pointed to is untouched.
- The new file gets the permissions of the file it replaces, or ``0o666 & ~umask`` if there was none.
- A process killed with SIGKILL mid-write leaves a hidden ``.<name>.<random>.tmp`` file behind in the
  destination directory (never a half-written file under the final name); `stale_temporaries(path)`
  lists them so that the single writer of a file can remove them (the checkpoint writer and dataset
  resume do).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pointstn.errors import PointstnError

__all__ = ["StorageError", "atomic_write", "atomic_write_bytes", "atomic_write_text", "stale_temporaries"]

_MODES = ("wb", "w", "wt")
# errno values that mean "the storage refused the write"; raised inside the `with` block they are
# reported as PointstnError naming the destination, like the same errors raised while finalising.
_STORAGE_ERRNOS = frozenset(
    code
    for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG, errno.EIO, errno.EROFS)
    if code is not None
)
_TEMP_NAME_MAX_STEM = 180  # keeps ".<stem>.<16 hex>.tmp" below the usual 255-byte NAME_MAX
_TEMP_TOKEN_HEX = 16


class StorageError(PointstnError):
    """The storage refused a write (disk full, quota, file too large, I/O error, read-only file system)."""


def _fail(path: Path, what: str, exc: OSError) -> PointstnError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    kind = StorageError if exc.errno in _STORAGE_ERRNOS else PointstnError
    return kind(f"cannot write {path}: {what}{reason}")


def _temp_name(path: Path, token: str) -> str:
    return f".{path.name[:_TEMP_NAME_MAX_STEM]}.{token}.tmp"


def stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """The temporary files that killed `atomic_write`s of `path` left in its directory, sorted.

    Only names of the exact form ``.<name>.<16 hex digits>.tmp`` match. Removing them is safe only for
    the single writer of `path`: another process writing `path` at the same moment owns one of them.
    """
    path = Path(os.fspath(path))
    pattern = re.compile(re.escape(_temp_name(path, "@")).replace("@", f"[0-9a-f]{{{_TEMP_TOKEN_HEX}}}"))
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    return sorted(path.parent / name for name in names if pattern.fullmatch(name))


def _check_destination(path: Path) -> Path:
    """Returns the destination's directory, or raises a PointstnError naming what is wrong."""
    if path.name in ("", ".", ".."):
        raise PointstnError(f"cannot write {path}: the path does not name a file")
    directory = path.parent
    if not directory.exists():
        raise PointstnError(f"cannot write {path}: directory {directory} does not exist")
    if not directory.is_dir():
        raise PointstnError(f"cannot write {path}: {directory} is not a directory")
    if path.is_dir():
        raise PointstnError(f"cannot write {path}: it is an existing directory")
    return directory


def _create_temp(path: Path, directory: Path) -> tuple[int, Path]:
    """Creates an exclusive temporary file next to `path`; returns (fd, temp path)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(16):
        temp = directory / _temp_name(path, secrets.token_hex(_TEMP_TOKEN_HEX // 2))
        try:
            # mode 0o666 lets the process umask decide, like a plain open() would.
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise PointstnError(
                    f"cannot write {path}: directory {directory} is not writable ({exc.strerror})"
                ) from exc
            raise _fail(path, "", exc) from exc
    raise PointstnError(f"cannot write {path}: could not create a unique temporary file in {directory}")


def _copy_mode(fd: int, path: Path) -> None:
    """Gives the temp file the permission bits of an existing regular file at `path`."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return
    if stat.S_ISREG(info.st_mode) and hasattr(os, "fchmod"):
        with contextlib.suppress(OSError):
            os.fchmod(fd, stat.S_IMODE(info.st_mode))


def _fsync_directory(directory: Path) -> None:
    """Makes a rename in `directory` durable; best effort (not possible on every OS/file system)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # e.g. EINVAL on file systems that do not support syncing directories
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "wb",
    *,
    encoding: str = "utf-8",
    newline: str | None = None,
    durable: bool = True,
) -> Iterator[IO]:
    """Opens a temporary file that replaces `path` only when the ``with`` block succeeds.

    Args:
        path: destination file. Its directory must exist.
        mode: "wb" (binary, default) or "w"/"wt" (text).
        encoding: text encoding for text mode (default UTF-8, never the locale's).
        newline: passed to the text wrapper (None: "\\n" is written as os.linesep).
        durable: fsync the file and the directory (default). False still gives atomic
            replacement against process crashes, but not against power loss; useful when writing
            many small throw-away files.

    Yields:
        The open file object. Do not close it yourself.

    Raises:
        ValueError: `mode` is not a write mode listed above.
        PointstnError: directory missing or not writable, disk full, I/O error (names `path`).
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_write mode must be one of {_MODES}, got {mode!r}")
    path = Path(os.fspath(path))
    directory = _check_destination(path)
    fd, temp = _create_temp(path, directory)
    try:
        _copy_mode(fd, path)
        if mode == "wb":
            handle: IO = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding=encoding, newline=newline)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise

    finalising = False  # False while the caller's block runs, True once we flush/fsync/rename
    try:
        yield handle
        finalising = True
        handle.flush()
        if durable:
            os.fsync(handle.fileno())
        handle.close()
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            handle.close()  # closes the descriptor even when the final flush fails again
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError) and (finalising or exc.errno in _STORAGE_ERRNOS):
            raise _fail(path, "", exc) from exc
        raise
    if durable:
        _fsync_directory(directory)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Atomically replaces `path` with `data` (see `atomic_write`)."""
    with atomic_write(path, "wb", durable=durable) as handle:
        handle.write(data)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", durable: bool = True
) -> None:
    """Atomically replaces `path` with `text` encoded as `encoding`; newlines are written as-is."""
    with atomic_write(path, "w", encoding=encoding, newline="", durable=durable) as handle:
        handle.write(text)
