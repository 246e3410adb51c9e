"""Find the mesh files a user points at: a folder, a glob, a single file, or URDF files.

Every object gets a unique, stable `name` derived from its path relative to the *root* folder (the
given folder, the non-wildcard prefix of a glob, or the single file's folder): the relative path
without its suffix, each part reduced to `[A-Za-z0-9._-]` and the parts joined with "-"
(`chairs/Oak Chair.obj` -> `chairs-Oak_Chair`). Names that still collide (`box.obj` and `box.stl`,
or `a/b.obj` and `a-b.obj`) are all qualified with their suffix (`box_obj`, `box_stl`), and any that
collide after that get `-2`, `-3`, ... in path order. Sources are sorted by that relative path, so
names and order depend only on the files present, never on the file system's listing order.

URDF files define objects too: each URDF contributes its visual meshes (or its collision meshes
when it has no usable visual one), named after the URDF (`<urdf path>-<mesh stem>` when it has
several), scaled by the URDF's `scale`. In a folder or glob, mesh files referenced by any URDF there
are not listed again on their own. Nothing outside the root is read: files (or URDF references)
that resolve outside it through `..`, an absolute path or a symlink are refused and reported (see
`pointstn.data.ingest.urdf`); a single file given directly is taken with its symlinks resolved.

Hidden files and folders (name starting with ".") are ignored, and symlinked folders are not
followed while walking a folder.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pointstn.data.ingest.errors import UrdfError
from pointstn.data.ingest.urdf import read_urdf_meshes
from pointstn.errors import MissingDependencyError, PointstnError

MESH_SUFFIXES = (".obj", ".stl", ".ply", ".glb", ".off")
URDF_SUFFIX = ".urdf"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class MeshSource:
    """One object to ingest.

    Attributes:
        path: the mesh file.
        name: unique, stable object name (see the module docstring).
        scale: (3,) per-axis scale applied to the file's coordinates before units (a URDF's
            `scale`; ones otherwise).
        urdf: the URDF that referenced the mesh, or None.
    """

    path: Path
    name: str
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    urdf: Path | None = None


@dataclass(frozen=True)
class Discovery:
    """What `discover` found.

    Attributes:
        root: the folder names are relative to and URDF references must stay inside.
        sources: the objects, sorted by relative path.
        skipped: (path, reason) for files that are not meshes (unsupported suffix).
        refused: (path, reason) for URDFs or URDF mesh references that could not be used.
    """

    root: Path
    sources: tuple[MeshSource, ...]
    skipped: tuple[tuple[str, str], ...]
    refused: tuple[tuple[str, str], ...]


def discover(spec: str | Path, *, root: str | Path | None = None) -> Discovery:
    """Find the objects named by `spec`: a folder (searched recursively), a glob, a file or a `.urdf`.

    Args:
        spec: folder, glob pattern (`**` recurses), mesh file or URDF file.
        root: folder that names are relative to and that URDF references may not leave; defaults to
            the folder itself, the glob's non-wildcard prefix, or the file's folder.

    Raises:
        PointstnError: `spec` names nothing, matches no usable mesh, or a single file has an
            unsupported suffix.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        base, files = path, _walk(path)
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix not in MESH_SUFFIXES + (URDF_SUFFIX,):
            raise PointstnError(f"{path}: unsupported file type {suffix!r} (supported: {_supported()})")
        base, files = path.resolve().parent, [path.resolve()]
    elif _has_magic(text):
        base = _glob_base(text)
        files = sorted(Path(match) for match in glob.glob(os.path.expanduser(text), recursive=True))
        files = [file for file in files if file.is_file()]
    else:
        raise PointstnError(f"{text}: no such file or folder (and not a glob pattern)")
    root_path = Path(root).expanduser() if root is not None else base
    if not root_path.is_dir():
        raise PointstnError(f"{root_path}: root is not a folder")
    discovery = _collect(files, root=root_path)
    if not discovery.sources:
        details = ""
        if discovery.refused:
            details += f"; {len(discovery.refused)} refused, first: {discovery.refused[0][1]}"
        if discovery.skipped:
            details += f"; {len(discovery.skipped)} other files skipped"
        raise PointstnError(f"{text}: matched no mesh files (supported: {_supported()}){details}")
    return discovery


def discover_meshes(spec: str | Path, *, root: str | Path | None = None) -> list[MeshSource]:
    """The objects of `discover(spec, root=root)`; skipped and refused files are only in `discover`'s result."""
    return list(discover(spec, root=root).sources)


def pybullet_random_urdfs() -> list[MeshSource]:
    """The 1000 generated blobs of `pybullet_data/random_urdfs` (`NNN/NNN.urdf` + `NNN.obj`).

    Names are `random_urdfs-NNN-NNN`; each blob's URDF `scale` (0.015) is applied, so load them
    with `units="m"`.

    Raises:
        MissingDependencyError: `pybullet` (which ships `pybullet_data`) is not installed.
        PointstnError: its `random_urdfs` folder is missing or holds no usable URDF.
    """
    try:
        import pybullet_data
    except ImportError:
        raise MissingDependencyError(
            "pybullet", "the pybullet random_urdfs mesh source", "pip install pybullet"
        ) from None
    folder = Path(pybullet_data.getDataPath()) / "random_urdfs"
    if not folder.is_dir():
        raise PointstnError(f"{folder}: pybullet_data has no random_urdfs folder")
    return discover_meshes(folder, root=folder.parent)


def object_name(relative: str) -> str:
    """The sanitized name of a relative path without suffix: `a/b c/d` -> `a-b_c-d`."""
    parts = [_UNSAFE.sub("_", part).strip("._") for part in relative.split("/")]
    return "-".join(part for part in parts if part) or "mesh"


@dataclass(frozen=True)
class _Entry:
    key: str  # relative path without suffix (posix), before sanitizing
    qualifier: str  # used when the name collides: the file suffix, or "urdf"
    path: Path
    scale: tuple[float, float, float]
    urdf: Path | None


def _collect(files: list[Path], *, root: Path) -> Discovery:
    skipped = [
        (str(file), f"unsupported file type {file.suffix.lower() or '(no suffix)'!r} (supported: {_supported()})")
        for file in files
        if file.suffix.lower() not in MESH_SUFFIXES + (URDF_SUFFIX,)
    ]
    files = [file for file in files if file.suffix.lower() in MESH_SUFFIXES + (URDF_SUFFIX,)]
    inside = root.resolve()
    refused = [
        (str(file), f"{file}: resolves to {file.resolve()}, outside the root folder {inside}")
        for file in files
        if not file.resolve().is_relative_to(inside)
    ]
    files = [file for file in files if file.resolve().is_relative_to(inside)]
    urdfs = [file for file in files if file.suffix.lower() == URDF_SUFFIX]
    meshes = [file for file in files if file.suffix.lower() in MESH_SUFFIXES]
    claimed: set[Path] = set()
    entries: list[_Entry] = []
    for urdf in urdfs:
        try:
            found = read_urdf_meshes(urdf, root=root, suffixes=MESH_SUFFIXES)
        except UrdfError as error:
            refused.append((str(urdf), str(error)))
            continue
        refused += [(str(urdf), reason) for _, reason in found.refused]
        claimed.update(mesh.path for mesh in found.meshes)
        preferred = found.preferred()
        if not preferred:
            refused.append((str(urdf), f"{urdf}: no usable <mesh> in any <visual> or <collision>"))
        key = _relative_key(urdf, root=root)
        for mesh in preferred:
            mesh_key = key if len(preferred) == 1 else f"{key}/{mesh.path.stem}"
            entries.append(_Entry(key=mesh_key, qualifier="urdf", path=mesh.path, scale=mesh.scale, urdf=urdf))
    for mesh in meshes:
        if mesh.resolve() in claimed:
            continue
        key = _relative_key(mesh, root=root)
        entries.append(_Entry(key=key, qualifier=mesh.suffix.lower()[1:], path=mesh, scale=(1.0, 1.0, 1.0), urdf=None))
    entries.sort(key=lambda entry: (entry.key, str(entry.path), str(entry.urdf)))
    names = _unique_names(entries)
    sources = tuple(
        MeshSource(path=entry.path, name=name, scale=entry.scale, urdf=entry.urdf)
        for entry, name in zip(entries, names, strict=True)
    )
    return Discovery(root=root, sources=sources, skipped=tuple(skipped), refused=tuple(refused))


def _unique_names(entries: list[_Entry]) -> list[str]:
    names = [object_name(entry.key) for entry in entries]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    names = [f"{name}_{entry.qualifier}" if counts[name] > 1 else name for name, entry in zip(names, entries)]
    used: set[str] = set()
    unique = []
    for name in names:
        candidate, number = name, 1
        while candidate in used:
            number += 1
            candidate = f"{name}-{number}"
        used.add(candidate)
        unique.append(candidate)
    return unique


def _relative_key(path: Path, *, root: Path) -> str:
    absolute, root_absolute = path.absolute(), root.absolute()
    relative = absolute.relative_to(root_absolute) if absolute.is_relative_to(root_absolute) else Path(path.name)
    return relative.with_suffix("").as_posix()


def _walk(folder: Path) -> list[Path]:
    files = []
    for directory, subdirectories, names in os.walk(folder, followlinks=False):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        files += [Path(directory) / name for name in sorted(names) if not name.startswith(".")]
    return sorted(files)


def _has_magic(text: str) -> bool:
    return any(character in text for character in "*?[")


def _glob_base(pattern: str) -> Path:
    parts = Path(os.path.expanduser(pattern)).parts
    plain = []
    for part in parts:
        if _has_magic(part):
            break
        plain.append(part)
    return Path(*plain) if plain else Path(".")


def _supported() -> str:
    return ", ".join(MESH_SUFFIXES + (URDF_SUFFIX,))
