"""PLY point clouds: `write_ply` (binary little endian or ASCII, atomic) and a defensive `read_ply`.

Writing: x, y, z (and nx, ny, nz) are written in the cloud's own dtype (float32 -> ``float``,
float64 -> ``double``) so a binary pointstn round trip is bit-exact; ASCII uses ``%.9g`` for float32
and Python's shortest round-trip repr for float64, so it is exact too. Colors are ``uchar red green
blue``. An empty cloud (N = 0) is written as ``element vertex 0`` and reads back as an empty cloud.

Reading accepts ascii, binary_little_endian and binary_big_endian files whose ``vertex`` element has
x, y, z (+ nx, ny, nz) (+ red, green, blue) of any PLY scalar type; every other property and element
(including ``face`` lists) is skipped. Coordinates come back as float32 if all of x, y, z are
``float``, else float64 (exact for every PLY type). Every problem with the file is reported as a
one-line `PointstnError` naming the file; declared element counts are checked against the file size
before anything is allocated. Elements after ``vertex`` are checked for size but not parsed.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pointstn.errors import PointstnError
from pointstn.io.atomic import atomic_write
from pointstn.io.cloud import PointCloud, colors_to_uint8

__all__ = ["read_ply", "write_ply"]

# PLY scalar type name -> numpy type code (without byte order).
_SCALAR_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_STRUCT_CODES = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "f4": "f", "f8": "d"}
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_MAX_HEADER_BYTES = 1 << 20
_COUNT_PATTERN = re.compile(r"[0-9]{1,19}")
_ASCII_CHUNK_ROWS = 1 << 16


@dataclass(frozen=True)
class _Property:
    name: str
    code: str  # numpy type code of the value (or of the list items), e.g. "f4"
    count_code: str | None = None  # numpy type code of a list's length; None for scalars


@dataclass(frozen=True)
class _Element:
    name: str
    count: int
    properties: tuple[_Property, ...]

    @property
    def has_lists(self) -> bool:
        return any(p.count_code is not None for p in self.properties)

    def min_row_bytes(self, ascii: bool) -> int:
        """Smallest size of one row: lists may be empty; an ASCII value is >= 1 char + separator."""
        if ascii:
            return max(1, 2 * len(self.properties))
        return sum(np.dtype(p.count_code or p.code).itemsize for p in self.properties)


@dataclass(frozen=True)
class _Header:
    byte_order: str | None  # "<", ">" or None for ASCII
    elements: tuple[_Element, ...]
    body_offset: int


def _show(token: str) -> str:
    return repr(token if len(token) <= 40 else token[:40] + "...")


def _split_header(head: bytes, is_whole_file: bool, path: str) -> tuple[list[str], int]:
    """Returns the header lines after "ply" and the byte offset where the body starts."""
    if not head.startswith((b"ply\n", b"ply\r\n")):
        raise PointstnError(f"{path}: not a PLY file (it does not start with a 'ply' line)")
    lines: list[str] = []
    pos = head.index(b"\n") + 1
    while True:
        end = head.find(b"\n", pos)
        raw = head[pos:] if end < 0 else head[pos:end]
        try:
            text = raw.decode("ascii").rstrip("\r")
        except UnicodeDecodeError:
            raise PointstnError(f"{path}: header line {len(lines) + 2} is not ASCII") from None
        if text.strip() == "end_header" and (end >= 0 or is_whole_file):
            return lines, len(head) if end < 0 else end + 1
        if end < 0:
            where = "" if is_whole_file else f" within the first {_MAX_HEADER_BYTES} bytes"
            raise PointstnError(f"{path}: PLY header has no 'end_header' line{where}")
        lines.append(text)
        pos = end + 1


def _parse_header(head: bytes, is_whole_file: bool, path: str) -> _Header:
    lines, body_offset = _split_header(head, is_whole_file, path)
    byte_order: str | None = None
    seen_format = False
    elements: dict[str, tuple[int, dict[str, _Property]]] = {}  # insertion-ordered; dicts keep
    # duplicate checks O(1) even for a hostile header with tens of thousands of properties
    for number, line in enumerate(lines, start=2):
        tokens = line.split()
        where = f"{path}: header line {number}"
        if not tokens or tokens[0] in ("comment", "obj_info"):
            continue
        keyword = tokens[0]
        if keyword == "format":
            if seen_format:
                raise PointstnError(f"{where}: second 'format' line")
            if len(tokens) != 3 or tokens[1] not in _FORMATS:
                raise PointstnError(
                    f"{where}: unknown format {_show(' '.join(tokens[1:]))}; expected 'format "
                    "ascii|binary_little_endian|binary_big_endian 1.0'"
                )
            if tokens[2] != "1.0":
                raise PointstnError(f"{where}: unsupported PLY version {_show(tokens[2])} (only 1.0)")
            byte_order, seen_format = _FORMATS[tokens[1]], True
        elif keyword == "element":
            if len(tokens) != 3 or not _COUNT_PATTERN.fullmatch(tokens[2]):
                raise PointstnError(f"{where}: expected 'element <name> <count>', got {_show(line)}")
            if tokens[1] in elements:
                raise PointstnError(f"{where}: element {_show(tokens[1])} is declared twice")
            elements[tokens[1]] = (int(tokens[2]), {})
        elif keyword == "property":
            if not elements:
                raise PointstnError(f"{where}: 'property' before any 'element'")
            properties = elements[next(reversed(elements))][1]
            if len(tokens) == 5 and tokens[1] == "list":
                count_code, code, name = _SCALAR_TYPES.get(tokens[2]), _SCALAR_TYPES.get(tokens[3]), tokens[4]
                if count_code is None or count_code[0] == "f" or code is None:
                    raise PointstnError(f"{where}: bad list property types in {_show(line)}")
                prop = _Property(name, code, count_code)
            elif len(tokens) == 3 and tokens[1] in _SCALAR_TYPES:
                prop = _Property(tokens[2], _SCALAR_TYPES[tokens[1]])
            else:
                raise PointstnError(f"{where}: expected 'property <type> <name>', got {_show(line)}")
            if prop.name in properties:
                raise PointstnError(f"{where}: property {_show(prop.name)} is declared twice")
            properties[prop.name] = prop
        else:
            raise PointstnError(f"{where}: unknown header keyword {_show(keyword)}")
    if not seen_format:
        raise PointstnError(f"{path}: PLY header has no 'format' line")
    parsed = tuple(_Element(name, count, tuple(props.values())) for name, (count, props) in elements.items())
    return _Header(byte_order, parsed, body_offset)


def _check_sizes(header: _Header, body_bytes: int, path: str) -> None:
    """Rejects counts the file cannot hold, before anything is allocated."""
    is_ascii = header.byte_order is None
    needed = -1 if is_ascii else 0  # the last ASCII line may lack its newline
    for element in header.elements:
        needed += element.count * element.min_row_bytes(is_ascii)
        if needed > body_bytes:
            raise PointstnError(
                f"{path}: header declares {element.count} {element.name!r} rows, which with the elements "
                f"before it need at least {needed} bytes, but only {body_bytes} bytes follow the header "
                "(truncated file or wrong count)"
            )


def _row_dtype(element: _Element, byte_order: str, list_lengths: Sequence[int]) -> np.dtype:
    """Packed structured dtype of one binary row, given the lengths of its lists in order."""
    fields, lengths = [], iter(list_lengths)
    for i, prop in enumerate(element.properties):
        if prop.count_code is None:
            fields.append((f"p{i}", byte_order + prop.code))
        else:
            fields.append((f"c{i}", byte_order + prop.count_code))
            fields.append((f"p{i}", byte_order + prop.code, (next(lengths),)))
    return np.dtype(fields)


def _scalar_columns(rows: np.ndarray, element: _Element) -> dict[str, np.ndarray]:
    """Native-byte-order copies of the scalar properties of structured `rows`."""
    return {
        prop.name: rows[f"p{i}"].astype(prop.code)
        for i, prop in enumerate(element.properties)
        if prop.count_code is None
    }


def _walk_binary_rows(
    body: bytes, pos: int, element: _Element, byte_order: str, path: str
) -> tuple[int, dict[str, np.ndarray]]:
    """Parses an element with list properties; returns (end offset, scalar columns)."""
    truncated = PointstnError(f"{path}: binary data ends inside element {element.name!r} (truncated file)")
    scalars = {i: p for i, p in enumerate(element.properties) if p.count_code is None}
    if element.count == 0:
        return pos, {p.name: np.empty(0, p.code) for p in scalars.values()}

    def read_length(prop: _Property, at: int) -> int:
        if at + np.dtype(prop.count_code).itemsize > len(body):
            raise truncated
        length = int(np.frombuffer(body, byte_order + prop.count_code, 1, at)[0])
        if length < 0:
            raise PointstnError(f"{path}: negative list length {length} in element {element.name!r}")
        return length

    # Fast path: every row has the list lengths of the first row (e.g. all faces are triangles).
    lengths, at = [], pos
    for prop in element.properties:
        if prop.count_code is None:
            at += np.dtype(prop.code).itemsize
        else:
            lengths.append(read_length(prop, at))
            at += np.dtype(prop.count_code).itemsize + lengths[-1] * np.dtype(prop.code).itemsize
    end = pos + element.count * (at - pos)
    if end <= len(body):  # only now is the row dtype known to be of a sane size
        rows = np.frombuffer(body, _row_dtype(element, byte_order, lengths), element.count, pos)
        list_fields = [f"c{i}" for i, p in enumerate(element.properties) if p.count_code is not None]
        if all(bool((rows[f] == n).all()) for f, n in zip(list_fields, lengths, strict=True)):
            return end, _scalar_columns(rows, element)

    # Slow path: walk row by row (bounded: every row holds at least one list length byte).
    columns = {i: np.empty(element.count, p.code) for i, p in scalars.items()}
    formats = {i: struct.Struct(byte_order + _STRUCT_CODES[p.code]) for i, p in scalars.items()}
    at = pos
    for r in range(element.count):
        for i, prop in enumerate(element.properties):
            if prop.count_code is None:
                if at + formats[i].size > len(body):
                    raise truncated
                columns[i][r] = formats[i].unpack_from(body, at)[0]
                at += formats[i].size
            else:
                length = read_length(prop, at)
                at += np.dtype(prop.count_code).itemsize + length * np.dtype(prop.code).itemsize
        if at > len(body):
            raise truncated
    return at, {scalars[i].name: values for i, values in columns.items()}


def _read_binary_vertex(handle: io.BufferedReader, header: _Header, vertex: _Element, path: str):
    byte_order = header.byte_order
    before = header.elements[: header.elements.index(vertex)]
    handle.seek(header.body_offset)
    if not vertex.has_lists and not any(e.has_lists for e in before):
        handle.seek(sum(e.count * e.min_row_bytes(False) for e in before), os.SEEK_CUR)
        row = _row_dtype(vertex, byte_order, ())
        data = handle.read(vertex.count * row.itemsize)
        if len(data) < vertex.count * row.itemsize:
            raise PointstnError(f"{path}: binary data ends inside the vertex element (truncated file)")
        return _scalar_columns(np.frombuffer(data, row, vertex.count), vertex)
    body = handle.read()  # list elements have variable size: parse them in memory
    pos = 0
    for element in (*before, vertex):
        if element.has_lists:
            pos, columns = _walk_binary_rows(body, pos, element, byte_order, path)
        else:
            row = _row_dtype(element, byte_order, ())
            if pos + element.count * row.itemsize > len(body):
                raise PointstnError(
                    f"{path}: binary data ends inside element {element.name!r} (truncated file)"
                )
            if element is vertex:
                columns = _scalar_columns(np.frombuffer(body, row, element.count, pos), element)
            pos += element.count * row.itemsize
    return columns


def _ascii_column(values: np.ndarray, prop: _Property, path: str) -> np.ndarray:
    """Casts float64-parsed ASCII values to the declared type, rejecting non-integers/out-of-range."""
    if prop.code[0] != "f":
        info = np.iinfo(prop.code)
        bad = ~((values == np.floor(values)) & (values >= info.min) & (values <= info.max))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise PointstnError(
                f"{path}: vertex row {row}: property {prop.name!r} has value {float(values[row])!r}, "
                f"not an integer in [{info.min}, {info.max}]"
            )
    with np.errstate(
        over="ignore", invalid="ignore"
    ):  # float32 overflow becomes inf, reported as non-finite later
        return values.astype(prop.code)


def _parse_ascii_row(line: str, number: int, vertex: _Element, path: str) -> list[float]:
    """Scalar values of one ASCII vertex row that contains list properties."""
    tokens, values, at = line.split(), [], 0
    try:
        for prop in vertex.properties:
            if prop.count_code is None:
                values.append(float(tokens[at]))
                at += 1
            else:
                length = int(tokens[at])
                if length < 0:
                    raise ValueError(f"negative list length {length}")
                at += 1 + length
        if at != len(tokens):
            raise ValueError(f"{len(tokens)} values where the header implies {at}")
        return values
    except (ValueError, IndexError) as exc:
        reason = "too few values" if isinstance(exc, IndexError) else str(exc)
        raise PointstnError(f"{path}: malformed ASCII vertex row {number}: {reason}") from None


def _read_ascii_vertex(handle: io.BufferedReader, header: _Header, vertex: _Element, path: str):
    handle.seek(header.body_offset)
    text = io.TextIOWrapper(handle, encoding="latin-1", newline=None)  # latin-1 never fails to decode
    skip = sum(e.count for e in header.elements[: header.elements.index(vertex)])
    scalars = [p for p in vertex.properties if p.count_code is None]
    if vertex.count == 0:
        return {p.name: np.empty(0, p.code) for p in scalars}
    lines = itertools.islice(text, skip, skip + vertex.count)
    if vertex.has_lists:
        rows = [_parse_ascii_row(line, r, vertex, path) for r, line in enumerate(lines)]
        table = np.array(rows, np.float64).reshape(len(rows), len(scalars))
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table = np.loadtxt(lines, dtype=np.float64, comments=None, ndmin=2)
        except (ValueError, OverflowError) as exc:
            reason = str(exc).splitlines()[0].split("; use `usecols`")[0]
            raise PointstnError(f"{path}: malformed ASCII vertex data: {reason}") from None
    if table.shape[0] != vertex.count:
        raise PointstnError(
            f"{path}: ASCII body holds {table.shape[0]} of the {vertex.count} declared vertex rows "
            "(truncated file or blank lines)"
        )
    if table.shape[1] != len(scalars):
        raise PointstnError(
            f"{path}: ASCII vertex rows have {table.shape[1]} values but the header declares {len(scalars)}"
        )
    return {p.name: _ascii_column(table[:, i], p, path) for i, p in enumerate(scalars)}


def _stack_floats(columns: dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    dtype = np.float32 if all(columns[n].dtype == np.float32 for n in names) else np.float64
    return np.stack([columns[n].astype(dtype) for n in names], axis=1)


def _optional_triplet(columns: dict[str, np.ndarray], names: Sequence[str], path: str) -> bool:
    present = [n for n in names if n in columns]
    if present and len(present) != len(names):
        missing = [n for n in names if n not in columns]
        raise PointstnError(f"{path}: vertex has {', '.join(present)} but not {', '.join(missing)}")
    return bool(present)


def _colors(columns: dict[str, np.ndarray], keep: np.ndarray | None, path: str) -> np.ndarray:
    names = ("red", "green", "blue")
    raw = [columns[n] if keep is None else columns[n][keep] for n in names]
    if all(c.dtype.kind in "iu" for c in raw):
        stacked = np.stack(raw, axis=1)
        if stacked.size and (stacked.min() < 0 or stacked.max() > 255):
            raise PointstnError(
                f"{path}: integer colors outside [0, 255] (range [{stacked.min()}, {stacked.max()}])"
            )
        return stacked.astype(np.uint8)
    try:
        return colors_to_uint8(np.stack([c.astype(np.float64) for c in raw], axis=1))
    except PointstnError as exc:
        raise PointstnError(f"{path}: {exc}") from None


def _assemble(columns: dict[str, np.ndarray], path: str, nonfinite: str) -> PointCloud:
    missing = [n for n in ("x", "y", "z") if n not in columns]
    if missing:
        present = ", ".join(columns) or "none"
        raise PointstnError(f"{path}: vertex element has no {'/'.join(missing)} property; it has: {present}")
    points = _stack_floats(columns, ("x", "y", "z"))
    normals = (
        _stack_floats(columns, ("nx", "ny", "nz"))
        if _optional_triplet(columns, ("nx", "ny", "nz"), path)
        else None
    )
    has_colors = _optional_triplet(columns, ("red", "green", "blue"), path)
    keep = None
    if nonfinite == "drop":
        keep = np.isfinite(points).all(axis=1)
        if normals is not None:
            keep &= np.isfinite(normals).all(axis=1)
        points, normals = points[keep], None if normals is None else normals[keep]
    colors = _colors(columns, keep, path) if has_colors else None
    try:  # shapes and dtypes are right by construction: only non-finite values can fail here
        return PointCloud(points=points, normals=normals, colors=colors)
    except PointstnError as exc:
        raise PointstnError(
            f"{path}: {exc}; read_ply(..., nonfinite='drop') discards such vertices"
        ) from None


def read_ply(path: str | os.PathLike[str], *, nonfinite: Literal["error", "drop"] = "error") -> PointCloud:
    """Reads the vertex element of a PLY file as a `PointCloud`.

    Args:
        path: the PLY file (ascii, binary_little_endian or binary_big_endian).
        nonfinite: "error" (default) rejects NaN/inf coordinates or normals naming how many and
            where; "drop" silently removes those vertices.

    Returns:
        PointCloud with points (N, 3) float32/float64, normals (N, 3) or None, colors (N, 3) uint8 or None.

    Raises:
        PointstnError: unreadable, malformed, truncated or unsupported file (one line, names the file).
    """
    if nonfinite not in ("error", "drop"):
        raise ValueError(f"nonfinite must be 'error' or 'drop', got {nonfinite!r}")
    shown = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(_MAX_HEADER_BYTES)
            header = _parse_header(head, is_whole_file=len(head) >= size, path=shown)
            vertices = [e for e in header.elements if e.name == "vertex"]
            if not vertices:
                raise PointstnError(f"{shown}: PLY file has no 'vertex' element")
            _check_sizes(header, size - header.body_offset, shown)
            read = _read_ascii_vertex if header.byte_order is None else _read_binary_vertex
            columns = read(handle, header, vertices[0], shown)
    except OSError as exc:
        raise PointstnError(f"cannot read {shown}: {exc.strerror or exc}") from None
    with np.errstate(invalid="ignore"):  # widening a signalling NaN warns; NaNs are reported anyway
        return _assemble(columns, shown, nonfinite)


def _as_cloud(cloud: object, normals: object, colors: object) -> PointCloud:
    if isinstance(cloud, PointCloud):
        if normals is not None or colors is not None:
            raise ValueError("pass normals/colors inside the PointCloud, not as extra arguments")
        return cloud
    if type(cloud).__module__.split(".")[0] == "torch":
        return PointCloud.from_torch(cloud, normals=normals, colors=colors)
    return PointCloud(
        points=cloud, normals=normals, colors=None if colors is None else colors_to_uint8(colors)
    )


def _ply_type(dtype: np.dtype) -> str:
    return {"f4": "float", "f8": "double", "u1": "uchar"}[dtype.str[1:]]


def write_ply(
    path: str | os.PathLike[str],
    cloud: PointCloud | np.ndarray,
    *,
    normals: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    binary: bool = True,
    comments: Sequence[str] = (),
) -> None:
    """Writes a point cloud as PLY, atomically (see `pointstn.io.atomic.atomic_write`).

    Args:
        path: destination file.
        cloud: a PointCloud, or (N, 3) float32/float64 points (numpy or torch).
        normals: (N, 3) float32/float64, only when `cloud` is an array.
        colors: (N, 3) uint8, or floats in [0, 1] rounded as ``np.rint(c * 255)``; only with an array.
        binary: binary_little_endian (default, exact and compact) or ASCII.
        comments: header comment lines (printable ASCII, no line breaks).
    """
    cloud = _as_cloud(cloud, normals, colors)
    for comment in comments:
        if not (isinstance(comment, str) and comment.isascii() and comment.isprintable()):
            raise PointstnError(f"PLY comments must be printable ASCII on one line, got {comment!r}")
    names = [("x", "y", "z", cloud.points)]
    if cloud.normals is not None:
        names.append(("nx", "ny", "nz", cloud.normals))
    if cloud.colors is not None:
        names.append(("red", "green", "blue", cloud.colors))
    columns = [(name, values[:, k]) for *triple, values in names for k, name in enumerate(triple)]
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0"]
    header += [f"comment {c}" if c else "comment" for c in comments]
    header.append(f"element vertex {cloud.num_points}")
    header += [f"property {_ply_type(v.dtype)} {name}" for name, v in columns]
    header.append("end_header\n")
    with atomic_write(path, "wb") as handle:
        handle.write("\n".join(header).encode("ascii"))
        if binary:
            rows = np.empty(cloud.num_points, [(name, "<" + v.dtype.str[1:]) for name, v in columns])
            for name, values in columns:
                rows[name] = values
            handle.write(rows.tobytes())
            return
        formats = {"f4": "%.9g", "f8": "%r", "u1": "%d"}
        line = " ".join(formats[v.dtype.str[1:]] for _, v in columns) + "\n"
        for start in range(0, cloud.num_points, _ASCII_CHUNK_ROWS):
            chunk = zip(*(v[start : start + _ASCII_CHUNK_ROWS].tolist() for _, v in columns), strict=True)
            handle.write("".join(line % row for row in chunk).encode("ascii"))
