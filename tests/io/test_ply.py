"""Tests for pointstn.io.ply (and the PointCloud it returns): exact round trips, interoperability
with plyfile/trimesh in both directions, hostile files, and a bounded fuzz test of read_ply."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pointstn.errors import PointstnError
from pointstn.io.cloud import InvalidPointCloudError, PointCloud, colors_to_uint8
from pointstn.io.ply import read_ply, write_ply

N = 37
XYZ = ["property float x", "property float y", "property float z"]
FLOAT_DTYPES = [np.float32, np.float64]


def _random_cloud(seed: int, dtype, *, n: int = N, normals: bool = True, colors: bool = True) -> PointCloud:
    rng = np.random.default_rng(seed)
    return PointCloud(
        points=(rng.normal(size=(n, 3)) * 10.0 ** rng.integers(-6, 6, size=(n, 1))).astype(dtype),
        normals=rng.normal(size=(n, 3)).astype(dtype) if normals else None,
        colors=rng.integers(0, 256, size=(n, 3), dtype=np.uint8) if colors else None,
    )


def _assert_same_cloud(actual: PointCloud, expected: PointCloud) -> None:
    for name in ("points", "normals", "colors"):
        a, e = getattr(actual, name), getattr(expected, name)
        assert (a is None) == (e is None), name
        if e is not None:
            assert a.dtype == e.dtype, name
            np.testing.assert_array_equal(a, e, err_msg=name)  # bit-exact, not approximate


def _ply(header_lines: list[str], body: bytes = b"", *, fmt: str = "binary_little_endian") -> bytes:
    return ("\n".join(["ply", f"format {fmt} 1.0", *header_lines, "end_header"]) + "\n").encode() + body


def _read_error(path, data: bytes, **kwargs) -> str:
    path.write_bytes(data)
    with pytest.raises(PointstnError) as info:
        read_ply(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("normals", [True, False])
@pytest.mark.parametrize("colors", [True, False])
def test_round_trip_is_exact(tmp_path, dtype, binary, normals, colors):
    cloud = _random_cloud(1, dtype, normals=normals, colors=colors)
    path = tmp_path / "cloud.ply"
    write_ply(path, cloud, binary=binary)
    _assert_same_cloud(read_ply(path), cloud)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_ascii_round_trip_of_extreme_floats(tmp_path, dtype):
    info = np.finfo(dtype)
    values = np.array([[info.max, -info.max, info.tiny], [info.smallest_subnormal, -0.0, info.eps],
                       [1 / 3, np.pi, -1e-30]], dtype=dtype)  # fmt: skip
    write_ply(tmp_path / "a.ply", values, binary=False)
    cloud = read_ply(tmp_path / "a.ply")
    assert cloud.points.dtype == dtype
    assert cloud.points.tobytes() == values.tobytes()  # exact including the sign of -0.0


@pytest.mark.parametrize("binary", [True, False])
def test_empty_cloud_is_written_and_read_back(tmp_path, binary):
    plyfile = pytest.importorskip("plyfile")
    path = tmp_path / "empty.ply"
    write_ply(path, np.zeros((0, 3), np.float32), colors=np.zeros((0, 3), np.uint8), binary=binary)
    cloud = read_ply(path)
    assert cloud.points.shape == (0, 3) and cloud.points.dtype == np.float32
    assert cloud.colors.shape == (0, 3) and cloud.normals is None
    assert plyfile.PlyData.read(str(path))["vertex"].count == 0


def test_binary_layout_is_little_endian_with_declared_types(tmp_path):
    cloud = _random_cloud(2, np.float64, n=3, normals=False)
    path = tmp_path / "c.ply"
    write_ply(path, cloud, comments=["made by a test", ""])
    header = (
        b"ply\nformat binary_little_endian 1.0\ncomment made by a test\ncomment\nelement vertex 3\n"
        b"property double x\nproperty double y\nproperty double z\n"
        b"property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    data = path.read_bytes()
    assert data.startswith(header)
    rows = np.frombuffer(data[len(header) :], [("p", "<f8", (3,)), ("c", "u1", (3,))])
    assert rows.shape == (3,)
    np.testing.assert_array_equal(rows["p"], cloud.points)
    np.testing.assert_array_equal(rows["c"], cloud.colors)


def test_float_colors_are_rounded_half_to_even(tmp_path):
    levels = np.array([0.0, 0.5 / 255, 1.5 / 255, 0.5, 127 / 255, 1.0, 0.2, 0.7, 0.999])
    colors = np.stack([levels, levels[::-1], np.full_like(levels, 0.25)], axis=1)
    expected = np.array(
        [[round(v * 255) for v in row] for row in colors.tolist()], np.uint8
    )  # Python round: ties to even
    write_ply(tmp_path / "c.ply", np.zeros((len(levels), 3), np.float32), colors=colors)
    np.testing.assert_array_equal(read_ply(tmp_path / "c.ply").colors, expected)
    assert expected[3, 0] == 128 and expected[1, 0] == 0 and expected[2, 0] == 2


@pytest.mark.parametrize(
    "bad", [np.array([[0.0, 1.01, 0.5]]), np.array([[np.nan, 0, 0]]), np.array([[-0.1, 0, 0]])]
)
def test_float_colors_outside_unit_range_are_rejected(tmp_path, bad):
    with pytest.raises(PointstnError, match="colors"):
        write_ply(tmp_path / "c.ply", np.zeros((1, 3), np.float32), colors=bad)
    assert not (tmp_path / "c.ply").exists()


def test_write_from_torch_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(3)
    points = torch.randn(11, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    colors = torch.rand(11, 3, generator=generator)
    write_ply(tmp_path / "t.ply", points, colors=colors)
    cloud = read_ply(tmp_path / "t.ply")
    np.testing.assert_array_equal(cloud.points, points.detach().numpy())
    np.testing.assert_array_equal(cloud.colors, np.rint(colors.double().numpy() * 255).astype(np.uint8))


def test_rejects_bad_comments_and_ambiguous_arguments(tmp_path):
    with pytest.raises(PointstnError, match="comments"):
        write_ply(tmp_path / "c.ply", np.zeros((1, 3)), comments=["two\nlines"])
    with pytest.raises(PointstnError, match="comments"):
        write_ply(tmp_path / "c.ply", np.zeros((1, 3)), comments=["naïve"])
    with pytest.raises(ValueError, match="inside the PointCloud"):
        write_ply(tmp_path / "c.ply", _random_cloud(0, np.float32), normals=np.zeros((N, 3), np.float32))
    assert not (tmp_path / "c.ply").exists()


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    import errno
    import os

    from pointstn.io import atomic

    path = tmp_path / "c.ply"
    write_ply(path, _random_cloud(4, np.float32))
    before = path.read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(PointstnError, match="No space left on device"):
        write_ply(path, _random_cloud(5, np.float32))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ply"]


# ---------------------------------------------------------------- PointCloud validation


def test_point_cloud_validation_messages():
    with pytest.raises(InvalidPointCloudError, match=r"shape \(N, 3\)"):
        PointCloud(points=np.zeros((4, 2), np.float32))
    with pytest.raises(InvalidPointCloudError, match="float32 or float64"):
        PointCloud(points=np.zeros((4, 3), np.int64))
    with pytest.raises(InvalidPointCloudError, match="normals has 3 rows but points has 4"):
        PointCloud(points=np.zeros((4, 3)), normals=np.zeros((3, 3)))
    with pytest.raises(InvalidPointCloudError, match="colors must be uint8"):
        PointCloud(points=np.zeros((4, 3)), colors=np.zeros((4, 3), np.float32))
    with pytest.raises(InvalidPointCloudError, match="numpy array"):
        PointCloud(points=[[0.0, 0.0, 0.0]])
    points = np.zeros((9, 3))
    points[2, 1], points[2, 2], points[7, 0] = np.nan, np.inf, -np.inf
    with pytest.raises(
        InvalidPointCloudError, match=r"3 non-finite value\(s\) .* in 2 of 9 points, at rows \[2, 7\]"
    ):
        PointCloud(points=points)


def test_point_cloud_arrays_are_read_only_views():
    points = np.ones((5, 3), np.float32)
    cloud = PointCloud(points=points)
    with pytest.raises(ValueError):
        cloud.points[0, 0] = 2.0
    assert points.flags.writeable  # the caller's array is not modified
    with pytest.raises(AttributeError):
        cloud.points = points  # frozen


def test_from_torch_converts_devices_dtypes_and_copies():
    torch = pytest.importorskip("torch")
    points = torch.arange(12, dtype=torch.float16).reshape(4, 3)
    normals = torch.ones(4, 3, dtype=torch.float64)
    colors = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [255, 254, 253]], dtype=torch.uint8)
    cloud = PointCloud.from_torch(points, normals=normals, colors=colors)
    assert cloud.points.dtype == np.float32 and cloud.normals.dtype == np.float64
    np.testing.assert_array_equal(cloud.points, np.arange(12, dtype=np.float32).reshape(4, 3))
    normals.add_(1.0)
    assert float(cloud.normals[0, 0]) == 1.0  # not sharing memory with the tensor
    np.testing.assert_array_equal(cloud.colors, colors.numpy())
    with pytest.raises(InvalidPointCloudError, match=r"shape \(N, 3\)"):
        PointCloud.from_torch(torch.zeros(2, 4, 3))
    with pytest.raises(InvalidPointCloudError, match="float32 or float64"):
        PointCloud.from_torch(torch.zeros(4, 3, dtype=torch.int32))


def test_colors_to_uint8_reference():
    rng = np.random.default_rng(6)
    colors = rng.random((200, 3))
    expected = np.array([[round(v * 255) for v in row] for row in colors.tolist()], np.uint8)
    np.testing.assert_array_equal(colors_to_uint8(colors), expected)
    exact = np.arange(256, dtype=np.uint8)[:, None].repeat(3, axis=1)
    np.testing.assert_array_equal(colors_to_uint8(exact / 255.0), exact)
    np.testing.assert_array_equal(colors_to_uint8((exact / 255.0).astype(np.float32)), exact)


# ---------------------------------------------------------------- interoperability


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("binary", [True, False])
def test_plyfile_reads_our_output(tmp_path, dtype, binary):
    plyfile = pytest.importorskip("plyfile")
    cloud = _random_cloud(7, dtype)
    path = tmp_path / "ours.ply"
    write_ply(path, cloud, binary=binary, comments=["pointstn test"])
    data = plyfile.PlyData.read(str(path))
    assert data.text == (not binary) and data.comments == ["pointstn test"]
    vertex = data["vertex"].data
    assert [vertex.dtype[name].kind + str(vertex.dtype[name].itemsize) for name in ("x", "nx", "red")] == [
        f"f{np.dtype(dtype).itemsize}",
        f"f{np.dtype(dtype).itemsize}",
        "u1",
    ]
    for k, axis in enumerate("xyz"):
        np.testing.assert_array_equal(vertex[axis], cloud.points[:, k])
        np.testing.assert_array_equal(vertex["n" + axis], cloud.normals[:, k])
    np.testing.assert_array_equal(np.stack([vertex[c] for c in ("red", "green", "blue")], 1), cloud.colors)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("binary", [True, False])
def test_trimesh_reads_our_output(tmp_path, dtype, binary):
    trimesh = pytest.importorskip("trimesh")
    cloud = _random_cloud(8, dtype, normals=False)
    path = tmp_path / "ours.ply"
    write_ply(path, cloud, binary=binary)
    loaded = trimesh.load(str(path))
    assert isinstance(loaded, trimesh.PointCloud)
    np.testing.assert_array_equal(loaded.vertices, cloud.points.astype(np.float64))
    np.testing.assert_array_equal(np.asarray(loaded.colors)[:, :3], cloud.colors)


def _plyfile_vertices(seed: int, n: int, types: dict[str, str]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vertices = np.empty(n, [(name, code) for name, code in types.items()])
    for name, code in types.items():
        kind = np.dtype(code)
        if kind.kind == "f":
            vertices[name] = rng.normal(size=n) * 100
        else:
            info = np.iinfo(kind)
            vertices[name] = rng.integers(max(info.min, -30000), min(info.max, 30000), size=n, endpoint=True)
    return vertices


def _faces(n_vertices: int, seed: int, mixed: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 5, size=9) if mixed else np.full(9, 3)
    faces = np.empty(9, [("vertex_indices", object), ("quality", "f4")])
    faces["vertex_indices"] = [rng.integers(0, n_vertices, size=s).astype(np.int32) for s in sizes]
    faces["quality"] = rng.random(9)
    return faces


@pytest.mark.parametrize("byte_order,text", [("<", False), (">", False), ("=", True)])
@pytest.mark.parametrize("faces_first", [False, True])
@pytest.mark.parametrize("mixed_faces", [False, True])
def test_reads_plyfile_output_with_faces_and_extra_properties(
    tmp_path, byte_order, text, faces_first, mixed_faces
):
    plyfile = pytest.importorskip("plyfile")
    types = {"intensity": "f8", "x": "f4", "y": "f4", "z": "f4", "nx": "f4", "ny": "f4", "nz": "f4",
             "red": "u1", "green": "u1", "blue": "u1", "alpha": "u1", "label": "i2"}  # fmt: skip
    vertices = _plyfile_vertices(9, 25, types)
    vertex = plyfile.PlyElement.describe(vertices, "vertex")
    face = plyfile.PlyElement.describe(
        _faces(25, 10, mixed_faces),
        "face",
        len_types={"vertex_indices": "u1"},
        val_types={"vertex_indices": "i4"},
    )
    extra = plyfile.PlyElement.describe(np.zeros(4, [("v", "u2")]), "camera")
    elements = [face, extra, vertex] if faces_first else [vertex, face, extra]
    path = tmp_path / "theirs.ply"
    plyfile.PlyData(elements, text=text, byte_order=byte_order).write(str(path))
    cloud = read_ply(path)
    assert cloud.points.dtype == np.float32
    np.testing.assert_array_equal(cloud.points, np.stack([vertices[c] for c in "xyz"], 1))
    np.testing.assert_array_equal(cloud.normals, np.stack([vertices[c] for c in ("nx", "ny", "nz")], 1))
    np.testing.assert_array_equal(cloud.colors, np.stack([vertices[c] for c in ("red", "green", "blue")], 1))


@pytest.mark.parametrize("text", [False, True])
def test_reads_integer_and_mixed_types_and_vertex_lists(tmp_path, text):
    plyfile = pytest.importorskip("plyfile")
    vertices = _plyfile_vertices(
        11, 15, {"x": "i2", "y": "u4", "z": "f8", "red": "u2", "green": "i1", "blue": "u1"}
    )
    vertices["red"] %= 256
    vertices["green"] = np.abs(vertices["green"])
    with_list = np.empty(15, vertices.dtype.descr + [("neighbours", object)])
    for name in vertices.dtype.names:
        with_list[name] = vertices[name]
    rng = np.random.default_rng(12)
    with_list["neighbours"] = [
        rng.integers(0, 15, size=rng.integers(0, 4)).astype(np.int32) for _ in range(15)
    ]
    element = plyfile.PlyElement.describe(
        with_list, "vertex", len_types={"neighbours": "u1"}, val_types={"neighbours": "i4"}
    )
    path = tmp_path / "ints.ply"
    plyfile.PlyData([element], text=text).write(str(path))
    cloud = read_ply(path)
    assert cloud.points.dtype == np.float64  # not all float32: widened exactly
    np.testing.assert_array_equal(cloud.points, np.stack([vertices[c].astype(np.float64) for c in "xyz"], 1))
    np.testing.assert_array_equal(
        cloud.colors, np.stack([vertices[c] for c in ("red", "green", "blue")], 1).astype(np.uint8)
    )


def test_reads_float_colors_and_crlf_ascii(tmp_path):
    colors = ["property float red", "property float green", "property float blue"]
    data = _ply(["element vertex 2", *XYZ, *colors], fmt="ascii")
    data = data.replace(b"\n", b"\r\n") + b"1 2 3 0 0.5 1\r\n-1 -2 -3.5 1 1 0\r\n"
    path = tmp_path / "crlf.ply"
    path.write_bytes(data)
    cloud = read_ply(path)
    np.testing.assert_array_equal(cloud.points, np.array([[1, 2, 3], [-1, -2, -3.5]], np.float32))
    np.testing.assert_array_equal(cloud.colors, np.array([[0, 128, 255], [255, 255, 0]], np.uint8))


# ---------------------------------------------------------------- hostile and broken files


def test_header_claiming_a_trillion_vertices_fails_fast(tmp_path):
    for fmt in ("binary_little_endian", "ascii"):
        path = tmp_path / f"huge_{fmt}.ply"
        path.write_bytes(_ply(["element vertex 1000000000000", *XYZ], b"\0" * 120, fmt=fmt))
        tracemalloc.start()
        start = time.perf_counter()
        with pytest.raises(PointstnError, match=r"1000000000000 'vertex' rows.*only 120 bytes") as info:
            read_ply(path)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < 1.0 and peak < 4 * 2**20
        assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "not a PLY file"),
        (b"PLY\nformat ascii 1.0\nend_header\n", "not a PLY file"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n", "no 'end_header'"),
        (_ply(["element vertex 0", *XYZ], fmt="binary_middle_endian"), "unknown format"),
        (_ply(["element vertex 0", *XYZ]).replace(b"1.0", b"2.0"), "unsupported PLY version"),
        (b"ply\nelement vertex 0\nproperty float x\nend_header\n", "no 'format' line"),
        (_ply(["property float x", "element vertex 0"]), "'property' before any 'element'"),
        (_ply(["element vertex -5", *XYZ]), "expected 'element <name> <count>'"),
        (_ply(["element vertex 1e3", *XYZ]), "expected 'element <name> <count>'"),
        (_ply(["element vertex 0", "property float32x x"]), "expected 'property <type> <name>'"),
        (_ply(["element vertex 0", *XYZ, "property float x"]), "declared twice"),
        (_ply(["element vertex 0", *XYZ, "element vertex 0"]), "declared twice"),
        (_ply(["element vertex 0", *XYZ, "property list float int idx"]), "bad list property types"),
        (_ply(["element vertex 0", *XYZ, "wibble 3"]), "unknown header keyword"),
        (_ply(["element face 0", "property list uchar int vertex_indices"]), "no 'vertex' element"),
        (_ply(["element vertex 1", "property float x", "property float y"], b"\0" * 8), "no z property"),
        (_ply(["element vertex 1", *XYZ, "property float nx"], b"\0" * 16), "has nx but not ny, nz"),
        (b"ply\nformat ascii 1.0\ncomment \xff\xfe\nend_header\n", "not ASCII"),
    ],
)
def test_malformed_headers(tmp_path, data, match):
    assert match in _read_error(tmp_path / "bad.ply", data)


@pytest.mark.parametrize("fmt", ["binary_big_endian", "ascii"])
def test_header_with_thirty_thousand_properties_is_handled_quickly(tmp_path, fmt):
    extra = [f"property uchar p{i}" for i in range(30_000)]
    path = tmp_path / "wide.ply"
    body = b"\0" * 30_012 if fmt != "ascii" else b"1 2 3" + b" 0" * 30_000 + b"\n"
    path.write_bytes(_ply(["element vertex 1", *XYZ, *extra], body, fmt=fmt))
    start = time.perf_counter()
    cloud = read_ply(path)
    assert time.perf_counter() - start < 3.0
    expected = [[0, 0, 0]] if fmt != "ascii" else [[1, 2, 3]]
    np.testing.assert_array_equal(cloud.points, np.array(expected, np.float32))


def test_header_without_end_header_in_a_large_file(tmp_path):
    data = b"ply\nformat ascii 1.0\n" + b"comment padding\n" * 70000
    assert "within the first" in _read_error(tmp_path / "bad.ply", data)


@pytest.mark.parametrize("cut", [1, 7, 100])
def test_truncated_binary_data(tmp_path, cut):
    path = tmp_path / "t.ply"
    write_ply(path, _random_cloud(13, np.float32))
    data = path.read_bytes()
    assert "truncated" in _read_error(path, data[: len(data) - cut])


@pytest.mark.parametrize("drop_rows,keep_tokens", [(1, 0), (1, 2), (4, 5), (0, 8)])
def test_truncated_ascii_data(tmp_path, drop_rows, keep_tokens):
    """ASCII truncation is detected when it removes rows or values; a cut inside the very last
    number is undetectable in any text format and is therefore not tested."""
    path = tmp_path / "t.ply"
    write_ply(path, _random_cloud(13, np.float64), binary=False)
    lines = path.read_bytes().split(b"\n")[:-1]  # the file ends with a newline
    keep = lines[: len(lines) - drop_rows - 1] + [b" ".join(lines[-drop_rows - 1].split()[:keep_tokens])]
    message = _read_error(path, b"\n".join(keep) + b"\n")
    assert "truncated" in message or "number of columns changed" in message


def test_truncated_face_list_before_vertices(tmp_path):
    header = ["element face 2", "property list uint int vertex_indices", "element vertex 1", *XYZ]
    body = np.array([3], "<u4").tobytes() + np.array([0, 1, 2], "<i4").tobytes()
    body += np.array([4_000_000_000], "<u4").tobytes() + b"\0" * 16  # list claims 4e9 items
    message = _read_error(tmp_path / "f.ply", _ply(header, body + b"\0" * 12))
    assert "ends inside element 'face'" in message


def test_negative_list_length(tmp_path):
    header = ["element face 2", "property list char int vertex_indices", "element vertex 1", *XYZ]
    body = np.array([3], "i1").tobytes() + np.zeros(3, "<i4").tobytes() + np.array([-1], "i1").tobytes()
    assert "negative list length -1" in _read_error(tmp_path / "f.ply", _ply(header, body + b"\0" * 40))


@pytest.mark.parametrize(
    "body,match",
    [
        (b"1 2 3\n4 5 x\n", "could not convert string 'x'"),
        (b"1 2 3\n4 5      \n", "number of columns changed"),
        (b"1 2 3 4\n5 6 7 8\n", "have 4 values but the header declares 3"),
        (b"1 2 3\n\n\n\n\n\n", "holds 1 of the 2 declared vertex rows"),
        (b"1,2,3\n4,5,6\n", "could not convert"),
        (b"1 2 3\n\x00\x01\x02 5 6\n", "could not convert"),
    ],
)
def test_garbage_in_ascii_body(tmp_path, body, match):
    assert match in _read_error(tmp_path / "g.ply", _ply(["element vertex 2", *XYZ], body, fmt="ascii"))


def test_ascii_integer_properties_are_range_checked(tmp_path):
    header = ["element vertex 2", *XYZ, "property uchar red", "property uchar green", "property uchar blue"]
    message = _read_error(tmp_path / "r.ply", _ply(header, b"0 0 0 1 2 3\n0 0 0 300 2 3\n", fmt="ascii"))
    assert "vertex row 1: property 'red' has value 300.0, not an integer in [0, 255]" in message
    message = _read_error(tmp_path / "r.ply", _ply(header, b"0 0 0 1 2.5 3\n0 0 0 1 2 3\n", fmt="ascii"))
    assert "'green' has value 2.5" in message


def test_integer_colors_above_255_are_rejected(tmp_path):
    header = [
        "element vertex 1",
        *XYZ,
        "property ushort red",
        "property ushort green",
        "property ushort blue",
    ]
    body = np.zeros(3, "<f4").tobytes() + np.array([10, 4000, 20], "<u2").tobytes()
    assert "integer colors outside [0, 255]" in _read_error(tmp_path / "c.ply", _ply(header, body))


def test_float_colors_outside_unit_range_in_a_file(tmp_path):
    colors = ["property float red", "property float green", "property float blue"]
    path = tmp_path / "c.ply"
    message = _read_error(path, _ply(["element vertex 1", *XYZ, *colors], b"0 0 0 0.5 1.5 0\n", fmt="ascii"))
    assert message == f"{path}: float colors must lie in [0, 1], got values in [0.0, 1.5]"


@pytest.mark.parametrize("fmt", ["binary_big_endian", "ascii"])
def test_nonfinite_values_error_by_default_and_can_be_dropped(tmp_path, fmt):
    points = np.random.default_rng(14).normal(size=(10, 3)).astype(np.float32)
    points[3, 0], points[7, 1], points[7, 2] = np.nan, np.inf, -np.inf
    if fmt == "ascii":
        body = "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in points).encode()
    else:
        body = points.astype(">f4").tobytes()
    path = tmp_path / "nan.ply"
    message = _read_error(path, _ply(["element vertex 10", *XYZ], body, fmt=fmt))
    assert "3 non-finite value(s) (NaN/inf) in 2 of 10 points, at rows [3, 7]" in message
    assert "nonfinite='drop'" in message
    dropped = read_ply(path, nonfinite="drop")
    keep = [i for i in range(10) if i not in (3, 7)]
    np.testing.assert_array_equal(dropped.points, points[keep])
    with pytest.raises(ValueError, match="nonfinite"):
        read_ply(path, nonfinite="ignore")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(PointstnError, match="cannot read .*missing.ply"):
        read_ply(tmp_path / "missing.ply")
    with pytest.raises(PointstnError, match="cannot read"):
        read_ply(tmp_path)


# ---------------------------------------------------------------- fuzzing


def _seed_files() -> list[bytes]:
    """Valid files of every supported flavour, to be mutated by the fuzzer."""
    import tempfile
    from pathlib import Path

    plyfile = pytest.importorskip("plyfile")
    seeds = []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "seed.ply"
        for dtype, binary in [(np.float32, True), (np.float64, False)]:
            write_ply(path, _random_cloud(15, dtype, n=6), binary=binary)
            seeds.append(path.read_bytes())
        vertices = _plyfile_vertices(
            16,
            5,
            {
                "x": "f4",
                "y": "f8",
                "z": "i2",
                "nx": "f4",
                "ny": "f4",
                "nz": "f4",
                "red": "u1",
                "green": "u1",
                "blue": "u1",
            },
        )
        face = plyfile.PlyElement.describe(
            _faces(5, 17, True),
            "face",
            len_types={"vertex_indices": "u1"},
            val_types={"vertex_indices": "i4"},
        )
        for text, order in [(False, ">"), (True, "=")]:
            plyfile.PlyData(
                [face, plyfile.PlyElement.describe(vertices, "vertex")], text=text, byte_order=order
            ).write(str(path))
            seeds.append(path.read_bytes())
    return seeds


SEEDS = _seed_files()

_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("count"), st.integers(0, 3), st.integers(0, 10**15)),
)


def _mutate(data: bytes, mutation) -> bytes:
    kind, position, value = mutation
    if kind == "count":  # rewrite one declared element count: lying headers
        lines = data.split(b"\n")
        element_lines = [i for i, line in enumerate(lines) if line.startswith(b"element ")]
        if element_lines:
            i = element_lines[position % len(element_lines)]
            lines[i] = b" ".join(lines[i].split()[:2] + [str(value).encode()])
        return b"\n".join(lines)
    position %= len(data) + 1
    if kind == "flip":
        return data[:position] + bytes([value]) + data[position + 1 :]
    if kind == "cut":
        return data[:position]
    return data[:position] + value + data[position:]


@pytest.fixture(scope="module")
def fuzz_path(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "fuzz.ply"


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("error::RuntimeWarning")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(range(len(SEEDS))),
    mutations=st.lists(_mutation, min_size=1, max_size=4),
    raw=st.one_of(st.none(), st.binary(max_size=300)),
)
def test_fuzzed_files_give_a_cloud_or_a_pointstn_error(fuzz_path, seed, mutations, raw):
    data = SEEDS[seed] if raw is None else b"ply\nformat binary_little_endian 1.0\n" + raw
    for mutation in mutations:
        data = _mutate(data, mutation)
    fuzz_path.write_bytes(data)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        cloud = read_ply(fuzz_path)
    except PointstnError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(cloud, PointCloud)
        assert cloud.points.ndim == 2 and cloud.points.shape[1] == 3
        assert np.isfinite(cloud.points).all()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"read_ply allocated {peak} bytes for a {len(data)}-byte file"
    assert time.perf_counter() - start < 5.0
