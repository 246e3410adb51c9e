"""Cheap checks of a mesh file *before* it is parsed, so hostile or truncated files fail fast.

Mesh formats with a header declare their element counts up front (PLY `element face N`, OFF
`V F E`, binary STL's triangle count, glTF accessor counts). A parser that trusts such a count may
allocate for it before noticing the data is missing. trimesh 5.2 happens to fail or truncate
safely on the cases probed (PLY/OFF/STL headers claiming 10^9 elements over a few bytes of data), but
it does so *silently* for ASCII PLY and OFF (it returns the few faces present) and for binary STL
(it returns an empty mesh), so we check every declared count against two bounds first:

- the caller's `max_faces` (vertices are bounded by `3 * max_faces`, enough for unshared triangles);
- plausibility: each declared element needs a minimum number of bytes (e.g. 12 for a binary PLY
  vertex of three float32, 8 for an ASCII face line "3 0 1 2\\n"), so the declared counts must fit
  in the file's size.

For GLB the face count is summed over the scene graph *with instancing* (a node tree may reference
one mesh many times, and flattening the scene multiplies its faces), memoized per node so a hostile
graph cannot make the count itself expensive. OBJ has no header: its size bound is the only
pre-load check, and the face count is checked again after loading.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from pointstn.data.ingest.errors import MeshFileError

_PLY_SCALAR_BYTES = {
    "char": 1, "uchar": 1, "int8": 1, "uint8": 1,
    "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
    "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4,
    "double": 8, "float64": 8,
}  # fmt: skip
_HEADER_LIMIT = 1 << 16  # bytes read to find a PLY/OFF header
_ASCII_TOKEN_BYTES = 2  # the shortest ASCII number plus its separator: "0 "
_GLTF_TRIANGLES = 4  # glTF primitive mode for triangle lists (the default)


def check_file(path: Path, *, max_faces: int, max_file_bytes: int) -> None:
    """Check that `path` is a non-empty regular file within the size bound and plausible headers.

    Raises:
        MeshFileError: missing, not a regular file, empty, larger than `max_file_bytes`, or a header
            that declares more than `max_faces` faces or more elements than the file can hold.
    """
    if not path.exists():
        raise MeshFileError(f"{path}: file does not exist")
    if not path.is_file():
        raise MeshFileError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise MeshFileError(f"{path}: file is empty (0 bytes)")
    if size > max_file_bytes:
        raise MeshFileError(f"{path}: file has {size} bytes, more than the limit max_file_bytes={max_file_bytes}")
    checks = {".ply": _check_ply, ".off": _check_off, ".stl": _check_stl, ".glb": _check_glb}
    check = checks.get(path.suffix.lower())
    if check is not None:
        check(path, size=size, max_faces=max_faces)


def _check_counts(path: Path, *, vertices: int, faces: int, max_faces: int) -> None:
    if faces > max_faces:
        raise MeshFileError(f"{path}: header declares {faces} faces, more than the limit max_faces={max_faces}")
    if vertices > 3 * max_faces:
        raise MeshFileError(
            f"{path}: header declares {vertices} vertices, more than 3 * max_faces={3 * max_faces}"
        )


def _check_fits(path: Path, *, needed: int, size: int, what: str) -> None:
    if needed > size:
        raise MeshFileError(
            f"{path}: header declares {what}, which needs at least {needed} bytes, but the file has {size} "
            "(truncated file or hostile header)"
        )


def _read_header(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(_HEADER_LIMIT)


def _check_ply(path: Path, *, size: int, max_faces: int) -> None:
    head = _read_header(path)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise MeshFileError(f"{path}: not a PLY file (no 'ply' magic, or no 'end_header' in {_HEADER_LIMIT} bytes)")
    header_bytes = head.index(b"\n", end) + 1 if b"\n" in head[end:] else end + len(b"end_header")
    lines = head[:end].decode("ascii", errors="replace").splitlines()
    binary_formats = (["format", "binary_little_endian"], ["format", "binary_big_endian"])
    binary = any(line.split()[:2] in binary_formats for line in lines)
    elements: list[tuple[str, int, int]] = []  # (name, count, minimum bytes per element)
    for line in lines:
        words = line.split()
        try:
            if words[:1] == ["element"] and len(words) == 3:
                elements.append((words[1], int(words[2]), 0))
            elif words[:1] == ["property"] and elements:
                name, count, per = elements[-1]
                elements[-1] = (name, count, per + _ply_property_bytes(words, binary=binary, face=name == "face"))
        except (ValueError, KeyError) as error:
            raise MeshFileError(f"{path}: malformed PLY header line {line!r} ({error})") from None
    if any(count < 0 for _, count, _ in elements):
        raise MeshFileError(f"{path}: PLY header declares a negative element count")
    counts = {name: count for name, count, _ in elements}
    _check_counts(path, vertices=counts.get("vertex", 0), faces=counts.get("face", 0), max_faces=max_faces)
    needed = header_bytes + sum(count * per for _, count, per in elements)
    described = ", ".join(f"{count} {name}" for name, count, _ in elements)
    _check_fits(path, needed=needed, size=size, what=described)


def _ply_property_bytes(words: list[str], *, binary: bool, face: bool) -> int:
    """Minimum bytes one PLY property takes; a face's index list holds at least 3 indices."""
    if words[1] == "list":  # property list <count type> <item type> <name>
        items = 3 if face else 0
        if binary:
            return _PLY_SCALAR_BYTES[words[2]] + items * _PLY_SCALAR_BYTES[words[3]]
        return _ASCII_TOKEN_BYTES * (1 + items)
    return _PLY_SCALAR_BYTES[words[1]] if binary else _ASCII_TOKEN_BYTES


def _check_off(path: Path, *, size: int, max_faces: int) -> None:
    text = _read_header(path).decode("ascii", errors="replace")
    tokens: list[str] = []
    for line in text.splitlines():
        tokens += line.split("#", 1)[0].split()
        if len(tokens) >= 4:
            break
    if not tokens or not tokens[0].upper().endswith("OFF"):
        raise MeshFileError(f"{path}: not an OFF file (first token is {tokens[0]!r} instead of 'OFF')" if tokens
                            else f"{path}: not an OFF file (no header)")
    try:
        vertices, faces = int(tokens[1]), int(tokens[2])
    except (IndexError, ValueError):
        raise MeshFileError(f"{path}: malformed OFF header (expected 'OFF' then vertex and face counts)") from None
    if vertices < 0 or faces < 0:
        raise MeshFileError(f"{path}: OFF header declares a negative count")
    _check_counts(path, vertices=vertices, faces=faces, max_faces=max_faces)
    needed = 3 * _ASCII_TOKEN_BYTES * vertices + 4 * _ASCII_TOKEN_BYTES * faces
    _check_fits(path, needed=needed, size=size, what=f"{vertices} vertices and {faces} faces")


def _check_stl(path: Path, *, size: int, max_faces: int) -> None:
    head = _read_header(path)
    if head.lstrip()[:5].lower() == b"solid" and b"facet" in head:
        return  # ASCII STL: no declared count; the size bound applies
    if size < 84:
        raise MeshFileError(f"{path}: binary STL needs at least 84 bytes (80-byte header + count), the file has {size}")
    (triangles,) = struct.unpack("<I", head[80:84])
    _check_counts(path, vertices=0, faces=triangles, max_faces=max_faces)
    _check_fits(path, needed=84 + 50 * triangles, size=size, what=f"{triangles} triangles")


def _check_glb(path: Path, *, size: int, max_faces: int) -> None:
    head = _read_header(path)
    if len(head) < 20 or head[:4] != b"glTF":
        raise MeshFileError(f"{path}: not a GLB file (no 'glTF' magic)")
    version, length = struct.unpack("<II", head[4:12])
    chunk_length, chunk_type = struct.unpack("<I4s", head[12:20])
    if version != 2 or chunk_type != b"JSON":
        raise MeshFileError(f"{path}: unsupported GLB (version {version}, first chunk {chunk_type!r}; need glTF 2)")
    _check_fits(path, needed=max(length, 20 + chunk_length), size=size, what=f"{length} bytes of glTF")
    with path.open("rb") as handle:
        handle.seek(20)
        try:
            document = json.loads(handle.read(chunk_length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise MeshFileError(f"{path}: GLB JSON chunk is not valid JSON ({error})") from None
    try:
        faces = _gltf_scene_faces(document)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise MeshFileError(f"{path}: malformed glTF scene ({type(error).__name__}: {error})") from None
    _check_counts(path, vertices=0, faces=faces, max_faces=max_faces)


def _gltf_scene_faces(document: dict) -> int:
    """Triangles the flattened default scene would hold (instancing counted), from the JSON alone."""
    accessors = document.get("accessors", [])
    mesh_faces = []
    for mesh in document.get("meshes", []):
        total = 0
        for primitive in mesh["primitives"]:
            if primitive.get("mode", _GLTF_TRIANGLES) != _GLTF_TRIANGLES:
                continue
            index = primitive["indices"] if "indices" in primitive else primitive["attributes"]["POSITION"]
            total += int(accessors[index]["count"]) // 3
        mesh_faces.append(total)
    nodes = document.get("nodes", [])
    scenes = document.get("scenes", [])
    if scenes:
        roots = scenes[document.get("scene", 0)].get("nodes", [])
    else:
        roots = list(range(len(nodes)))
    memo: dict[int, int] = {}
    on_stack: set[int] = set()
    for root in roots:  # iterative post-order: deep hostile trees cannot hit the recursion limit
        stack = [(int(root), False)]
        while stack:
            node, children_done = stack.pop()
            if node in memo:
                continue
            children = [int(child) for child in nodes[node].get("children", [])]
            if children_done:
                own = mesh_faces[nodes[node]["mesh"]] if "mesh" in nodes[node] else 0
                memo[node] = own + sum(memo[child] for child in children)
                on_stack.discard(node)
                continue
            if node in on_stack:
                raise ValueError(f"node {node} is its own ancestor (cycle in the scene graph)")
            on_stack.add(node)
            stack.append((node, True))
            stack.extend((child, False) for child in children if child not in memo)
    return sum(memo[int(root)] for root in roots)
