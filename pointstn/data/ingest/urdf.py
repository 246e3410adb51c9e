"""Read the mesh references of a URDF file, safely.

A URDF names its meshes in `<visual>` and `<collision>` elements:
`<geometry><mesh filename="..." scale="sx sy sz"/></geometry>`. Filenames are relative to the URDF's
folder, absolute, `file://...`, or `package://<package>/<path>` (ROS). We resolve them against a
*root* folder and refuse every reference that ends up outside it, whether through `..`, an absolute
path or a symlink: a URDF is untrusted input and must not make us read arbitrary files.

`package://<package>/<path>` is looked up, in order, as: the nearest ancestor folder of the URDF
named `<package>` (inside the root), `<root>/<package>`, `<URDF folder>/<package>`; the first that
holds the file wins.

Parsing uses `xml.etree.ElementTree` on documents without any `<!DOCTYPE` or `<!ENTITY`
declaration (URDFs have no use for them; refusing them rules out entity expansion and external
entities regardless of the expat version). Per-visual `<origin>` transforms and joint kinematics are
not applied: each referenced mesh becomes one object in its own file frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from pointstn.data.ingest.errors import UrdfError

MAX_URDF_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class UrdfMesh:
    """One mesh reference of a URDF, resolved.

    Attributes:
        path: the resolved mesh file (inside the root folder).
        scale: (3,) the URDF's `scale` attribute (ones when absent).
        kind: "visual" or "collision".
    """

    path: Path
    scale: tuple[float, float, float]
    kind: str


@dataclass(frozen=True)
class UrdfMeshes:
    """The mesh references of one URDF.

    Attributes:
        meshes: the references that resolved, in document order, duplicates removed.
        refused: (reference, reason) for every reference that was refused.
    """

    meshes: tuple[UrdfMesh, ...]
    refused: tuple[tuple[str, str], ...]

    def preferred(self) -> tuple[UrdfMesh, ...]:
        """The visual meshes, or the collision meshes when the URDF has no usable visual mesh."""
        visual = tuple(mesh for mesh in self.meshes if mesh.kind == "visual")
        return visual or tuple(mesh for mesh in self.meshes if mesh.kind == "collision")


def read_urdf_meshes(urdf: Path, *, root: Path, suffixes: tuple[str, ...]) -> UrdfMeshes:
    """Parse `urdf` and resolve its `<visual>`/`<collision>` mesh references inside `root`.

    Args:
        suffixes: lower-case file suffixes of the mesh formats that can be loaded; references to
            other formats (e.g. `.dae`) are refused.

    Raises:
        UrdfError: the URDF is unreadable, too large, declares a DOCTYPE/ENTITY, is not XML, or its
            root element is not `<robot>`. Bad individual references are returned in `refused`.
    """
    try:
        size = urdf.stat().st_size
        if size > MAX_URDF_BYTES:
            raise UrdfError(f"{urdf}: URDF has {size} bytes, more than the limit of {MAX_URDF_BYTES}")
        data = urdf.read_bytes()
    except OSError as error:
        raise UrdfError(f"{urdf}: cannot read URDF ({error.strerror or error})") from None
    lowered = data.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise UrdfError(f"{urdf}: URDF declares a DOCTYPE or ENTITY, which is refused (entity expansion)")
    try:
        document = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise UrdfError(f"{urdf}: not valid XML ({error})") from None
    if document.tag != "robot":
        raise UrdfError(f"{urdf}: root element is <{document.tag}>, expected <robot>")
    meshes: list[UrdfMesh] = []
    refused: list[tuple[str, str]] = []
    for kind in ("visual", "collision"):
        for element in document.iter(kind):
            for mesh in element.iter("mesh"):
                reference = mesh.get("filename", "")
                try:
                    resolved = UrdfMesh(
                        path=resolve_reference(reference, urdf=urdf, root=root),
                        scale=_parse_scale(mesh.get("scale"), urdf=urdf),
                        kind=kind,
                    )
                except UrdfError as error:
                    _add(refused, (reference, str(error)))
                    continue
                if resolved.path.suffix.lower() not in suffixes:
                    reason = f"unsupported mesh format {resolved.path.suffix!r} (supported: {', '.join(suffixes)})"
                    _add(refused, (reference, f"{urdf}: mesh {reference!r}: {reason}"))
                    continue
                _add(meshes, resolved)
    return UrdfMeshes(meshes=tuple(meshes), refused=tuple(refused))


def _add(items: list, item) -> None:
    if item not in items:
        items.append(item)


def resolve_reference(reference: str, *, urdf: Path, root: Path) -> Path:
    """The file a URDF mesh reference names, resolved (symlinks followed) and checked to lie in `root`.

    Raises:
        UrdfError: empty reference, unknown package, missing file, or a path outside `root`.
    """
    if not reference:
        raise UrdfError(f"{urdf}: <mesh> without a filename")
    root = root.resolve()
    base = urdf.parent
    if reference.startswith("package://"):
        package, _, inside = reference[len("package://"):].partition("/")
        candidates = [folder / inside for folder in _package_folders(package, urdf=urdf, root=root)]
        existing = [candidate for candidate in candidates if candidate.is_file()]
        if not existing:
            outside = [folder for folder in urdf.resolve().parents if folder.name == package]
            where = f"; the package folder {outside[0]} is outside it, pass a root that contains it" if outside else ""
            raise UrdfError(
                f"{urdf}: mesh {reference!r}: package {package!r} with that file not found under the root folder "
                f"{root}{where}"
            )
        path = existing[0]
    elif reference.startswith("file://"):
        path = Path(reference[len("file://"):])
    else:
        path = base / reference
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise UrdfError(
            f"{urdf}: mesh {reference!r} resolves to {resolved}, outside the root folder {root} "
            "('..', an absolute path or a symlink escapes it); refused — pass a root that contains it"
        )
    if not resolved.is_file():
        raise UrdfError(f"{urdf}: mesh {reference!r} does not exist ({resolved})")
    return resolved


def _package_folders(package: str, *, urdf: Path, root: Path) -> list[Path]:
    folders = [folder for folder in urdf.resolve().parents if folder.name == package and folder.is_relative_to(root)]
    return folders[:1] + [root / package, urdf.parent / package]


def _parse_scale(text: str | None, *, urdf: Path) -> tuple[float, float, float]:
    if text is None:
        return (1.0, 1.0, 1.0)
    try:
        values = [float(word) for word in text.split()]
    except ValueError:
        raise UrdfError(f"{urdf}: mesh scale {text!r} is not a list of numbers") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(math.isfinite(value) and value > 0 for value in values):
        raise UrdfError(f"{urdf}: mesh scale {text!r} must be one or three positive finite numbers")
    return (values[0], values[1], values[2])
