"""Tests for pointstn.io.npz: exact round trips, JSON meta, and clear errors on bad archives."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import time
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pointstn.errors import PointstnError
from pointstn.io import atomic
from pointstn.io.cloud import PointCloud
from pointstn.io.npz import load_cloud_npz, save_cloud_npz


def _random_cloud(seed: int, dtype, *, n: int = 41, normals: bool = True, colors: bool = True) -> PointCloud:
    rng = np.random.default_rng(seed)
    return PointCloud(
        points=rng.normal(size=(n, 3)).astype(dtype),
        normals=rng.normal(size=(n, 3)).astype(dtype) if normals else None,
        colors=rng.integers(0, 256, size=(n, 3), dtype=np.uint8) if colors else None,
    )


def _load_error(path) -> str:
    with pytest.raises(PointstnError) as info:
        load_cloud_npz(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("normals", [True, False])
@pytest.mark.parametrize("colors", [True, False])
def test_round_trip_is_exact(tmp_path, dtype, normals, colors):
    cloud = _random_cloud(1, dtype, normals=normals, colors=colors)
    meta = {
        "split": "test",
        "view": 3,
        "pose": [[1.0, 0.0], [0.5, -2.25]],
        "nested": {"ok": True, "none": None},
    }
    path = tmp_path / "sample.npz"
    save_cloud_npz(path, cloud, meta=meta)
    loaded, loaded_meta = load_cloud_npz(path)
    assert loaded_meta == meta
    for name in ("points", "normals", "colors"):
        expected, actual = getattr(cloud, name), getattr(loaded, name)
        assert (expected is None) == (actual is None)
        if expected is not None:
            assert actual.dtype == expected.dtype and actual.tobytes() == expected.tobytes()


def test_layout_is_plain_arrays_and_json(tmp_path):
    path = tmp_path / "sample"  # no suffix: used exactly as given, numpy does not append ".npz"
    save_cloud_npz(path, _random_cloud(2, np.float32, normals=False), meta={"a": 1})
    assert os.listdir(tmp_path) == ["sample"]
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["colors", "meta_json", "points"]
        meta = archive["meta_json"]
        assert meta.shape == () and meta.dtype.kind == "U"
        assert json.loads(str(meta)) == {"a": 1}


def test_empty_cloud_and_default_meta(tmp_path):
    path = tmp_path / "empty.npz"
    save_cloud_npz(path, PointCloud(points=np.zeros((0, 3), np.float64)))
    cloud, meta = load_cloud_npz(path)
    assert cloud.points.shape == (0, 3) and cloud.points.dtype == np.float64
    assert cloud.normals is None and cloud.colors is None and meta == {}


@pytest.mark.parametrize(
    "meta,match",
    [
        ({"pose": (1, 2)}, "JSON round trip"),
        ({1: "a"}, "JSON round trip"),
        ({"x": float("nan")}, "not JSON-serializable"),
        ({"x": np.float32(1.5)}, "not JSON-serializable"),
        ({"x": object()}, "not JSON-serializable"),
        ([1, 2], "must be a dict"),
    ],
)
def test_meta_must_survive_json(tmp_path, meta, match):
    with pytest.raises(PointstnError, match=match):
        save_cloud_npz(tmp_path / "m.npz", _random_cloud(3, np.float32), meta=meta)
    assert os.listdir(tmp_path) == []


def test_rejects_non_cloud(tmp_path):
    with pytest.raises(PointstnError, match="expects a PointCloud"):
        save_cloud_npz(tmp_path / "m.npz", np.zeros((3, 3)))


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    save_cloud_npz(path, _random_cloud(4, np.float32), meta={"v": 1})
    before = path.read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(PointstnError, match="No space left on device"):
        save_cloud_npz(path, _random_cloud(5, np.float64), meta={"v": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]
    assert load_cloud_npz(path)[1] == {"v": 1}


POINTS = np.zeros((4, 3), np.float32)
META = np.array("{}")


@pytest.mark.parametrize(
    "arrays,match",
    [
        ({"meta_json": META}, r"missing \['points'\]"),
        ({"points": POINTS}, r"missing \['meta_json'\]"),
        ({"points": POINTS, "meta_json": META, "labels": np.zeros(4)}, r"unexpected \['labels'\]"),
        ({"points": np.zeros((4, 2), np.float32), "meta_json": META}, r"shape \(N, 3\)"),
        ({"points": np.zeros((4, 3), np.int32), "meta_json": META}, "float32 or float64"),
        (
            {"points": POINTS, "normals": np.zeros((5, 3), np.float32), "meta_json": META},
            "5 rows but points has 4",
        ),
        (
            {"points": POINTS, "colors": np.zeros((4, 3), np.float32), "meta_json": META},
            "colors must be uint8",
        ),
        ({"points": np.full((4, 3), np.nan, np.float32), "meta_json": META}, "12 non-finite value"),
        ({"points": POINTS, "meta_json": np.array(b"{}")}, "must be a 0-d string"),
        ({"points": POINTS, "meta_json": np.array("{not json")}, "not valid JSON"),
        ({"points": POINTS, "meta_json": np.array("[1, 2]")}, "must hold a JSON object"),
        ({"points": np.array([None, 1], dtype=object), "meta_json": META}, "object array"),
    ],
)
def test_bad_contents_are_named(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    path.write_bytes(_npz_bytes(**arrays))
    assert re.search(match, _load_error(path))


@pytest.mark.parametrize(
    "make",
    [
        lambda good: b"",
        lambda good: b"definitely not a zip file",
        lambda good: good[: len(good) // 2],
        lambda good: good[:-10],
        lambda good: good[:200] + bytes(b ^ 0xFF for b in good[200:260]) + good[260:],
        lambda good: np.lib.format.magic(1, 0) + b"\0" * 50,  # an .npy, not an .npz
    ],
)
def test_corrupt_files(tmp_path, make):
    good = _npz_bytes(points=np.arange(300, dtype=np.float64).reshape(100, 3), meta_json=META)
    path = tmp_path / "corrupt.npz"
    path.write_bytes(make(good))
    message = _load_error(path)
    assert "not a valid .npz" in message or "corrupt" in message


def test_array_header_claiming_huge_shape_fails_fast(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 3)}
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("points.npy", header.getvalue() + b"\0" * 48)
        archive.writestr("meta_json.npy", _npy(META))
    path = tmp_path / "huge.npz"
    path.write_bytes(buffer.getvalue())
    start = time.perf_counter()
    message = _load_error(path)
    assert time.perf_counter() - start < 1.0
    assert "points.npy claims shape (1000000000000, 3)" in message


def test_zip_member_declaring_impossible_size_is_rejected(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("points.npy", _npy(POINTS))
        archive.writestr("meta_json.npy", _npy(META))
    data = bytearray(buffer.getvalue())
    central = data.rfind(b"PK\x01\x02", 0, data.rfind(b"meta_json.npy"))  # its central-directory entry
    data[central + 24 : central + 28] = (2**32 - 1).to_bytes(4, "little")  # uncompressed size: 4 GiB
    path = tmp_path / "lying.npz"
    path.write_bytes(bytes(data))
    assert "meta_json.npy declares 4294967295 bytes from 136 compressed bytes (corrupt file)" in _load_error(
        path
    )


def test_loads_compressed_archives(tmp_path):
    points = np.random.default_rng(6).normal(size=(500, 3))
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, points=points, meta_json=np.array('{"source": "elsewhere"}'))
    cloud, meta = load_cloud_npz(path)
    np.testing.assert_array_equal(cloud.points, points)
    assert meta == {"source": "elsewhere"}


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(PointstnError, match="no such file"):
        load_cloud_npz(tmp_path / "missing.npz")
    with pytest.raises(PointstnError, match="directory"):
        load_cloud_npz(tmp_path)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


_SEED_ARCHIVE = _npz_bytes(
    points=np.random.default_rng(7).normal(size=(20, 3)),
    colors=np.zeros((20, 3), np.uint8),
    meta_json=np.array('{"a": [1, 2]}'),
)


@pytest.fixture(scope="module")
def fuzz_path(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "fuzz.npz"


@pytest.mark.timeout(120)
@settings(max_examples=100, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_SEED_ARCHIVE)), st.binary(min_size=0, max_size=4), st.booleans()),
        min_size=1,
        max_size=4,
    )
)
def test_fuzzed_archives_give_a_cloud_or_a_pointstn_error(fuzz_path, edits):
    data = _SEED_ARCHIVE
    for position, replacement, truncate in edits:
        data = data[:position] if truncate else data[:position] + replacement + data[position + 4 :]
    fuzz_path.write_bytes(data)
    try:
        cloud, meta = load_cloud_npz(fuzz_path)
    except PointstnError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(cloud, PointCloud) and isinstance(meta, dict)
