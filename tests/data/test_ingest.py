"""Mesh ingestion: formats, units, up axis, repair, hostile and broken files, URDF discovery, names.

Every fixture is generated here with trimesh. References are computed independently in float64:
volumes by a per-face loop of 3x3 determinants, the y-up rotation by scipy's axis-angle rotation.
"""

from __future__ import annotations

import json
import struct
import sys
import time
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from pointstn.data.ingest import (
    EXACT_NOTE,
    Y_UP_TO_Z_UP,
    DegenerateMeshError,
    MeshFileError,
    MeshSource,
    discover,
    discover_meshes,
    ingest,
    load_object,
    pybullet_random_urdfs,
    repair_mesh,
)
from pointstn.errors import MissingDependencyError, PointstnError

FORMATS = ("obj", "stl", "ply", "off", "glb")
FLOAT32_FORMATS = ("stl", "ply", "glb")  # trimesh writes float32 coordinates; obj/off are decimal text
# coordinate error of a written file, relative to the largest coordinate magnitude
RTOL = {"float32": 2.0**-23, "float64": 1e-9}
UNIT_METRES = {"m": 1.0, "cm": 0.01, "mm": 0.001}
BOX_EXTENTS = np.array([0.12, 0.3, 0.5])  # metres, all different so axis swaps show


def reference_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Slow, obviously correct: sum of signed tetrahedra (origin, a, b, c), float64."""
    total = 0.0
    for a, b, c in faces:
        total += np.linalg.det(np.stack([vertices[a], vertices[b], vertices[c]]).astype(np.float64)) / 6.0
    return total


def reference_up_rotation(up: str) -> np.ndarray:
    """+90 degrees about +x for y-up (takes +y to +z), identity for z-up."""
    return Rotation.from_rotvec([np.pi / 2, 0.0, 0.0]).as_matrix() if up == "y" else np.eye(3)


def write_mesh(path: Path, vertices: np.ndarray, faces: np.ndarray) -> Path:
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    data = mesh.export(file_type=path.suffix[1:])
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def box(extents=BOX_EXTENTS, centre=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    mesh = trimesh.creation.box(extents=extents)
    mesh.apply_translation(centre)
    return mesh


def sphere(radius: float = 0.2, subdivisions: int = 2) -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)


def rtol_for(fmt: str) -> float:
    return RTOL["float32"] if fmt in FLOAT32_FORMATS else RTOL["float64"]


# ---------------------------------------------------------------- formats, units, up axis


def test_y_up_rotation_is_proper_and_matches_reference():
    assert np.linalg.det(Y_UP_TO_Z_UP) == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(Y_UP_TO_Z_UP @ Y_UP_TO_Z_UP.T, np.eye(3), atol=1e-15)
    np.testing.assert_allclose(Y_UP_TO_Z_UP, reference_up_rotation("y"), atol=1e-15)
    np.testing.assert_array_equal(Y_UP_TO_Z_UP @ [0.0, 1.0, 0.0], [0.0, 0.0, 1.0])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("units", ["m", "cm", "mm"])
@pytest.mark.parametrize("up", ["z", "y"])
def test_box_round_trip_gives_metric_canonical_mesh(tmp_path, fmt, units, up):
    rng = np.random.default_rng(7)
    canonical = box(centre=rng.uniform(-1, 1, 3))  # metres, z up, off-centre
    rotation = reference_up_rotation(up)
    file_vertices = canonical.vertices @ rotation / UNIT_METRES[units]  # R^T v per row: the file frame
    path = write_mesh(tmp_path / f"box.{fmt}", file_vertices, canonical.faces)

    obj = load_object(MeshSource(path=path, name="box"), units=units, up=up)

    atol = 2 * rtol_for(fmt) * np.abs(canonical.vertices).max()  # each coordinate rounded once
    expected = canonical.vertices - canonical.bounds.mean(axis=0)
    np.testing.assert_allclose(obj.extents, BOX_EXTENTS, rtol=0, atol=2 * atol)
    np.testing.assert_allclose(obj.vertices.min(axis=0), -BOX_EXTENTS / 2, rtol=0, atol=2 * atol)
    distances, _ = cKDTree(expected).query(obj.vertices)
    assert distances.max() <= 2 * atol
    assert len(obj.vertices) == 8 and len(obj.faces) == 12
    assert obj.watertight and obj.volume_note == EXACT_NOTE
    volume_rtol = float(np.sum(2 * atol / BOX_EXTENTS))
    assert obj.volume == pytest.approx(reference_volume(expected, canonical.faces), rel=volume_rtol)
    assert obj.volume == pytest.approx(float(np.prod(BOX_EXTENTS)), rel=volume_rtol)
    assert obj.vertices.dtype == np.float64 and obj.faces.dtype == np.int64
    assert not obj.vertices.flags.writeable
    assert (obj.name, obj.family, obj.symmetry, obj.units, obj.up) == ("box", "user", "unknown", units, up)


@pytest.mark.parametrize("fmt", FORMATS)
def test_sphere_volume_and_tall_y_box_becomes_tall_z(tmp_path, fmt):
    ball = sphere(radius=40.0)  # centimetres in the file
    path = write_mesh(tmp_path / f"ball.{fmt}", ball.vertices, ball.faces)
    obj = load_object(path, units="cm", up="y", family="ball")
    expected = reference_volume(ball.vertices * 0.01, ball.faces)
    assert obj.volume == pytest.approx(expected, rel=3 * rtol_for(fmt))
    assert obj.family == "ball" and obj.name == "ball"

    tall = box(extents=(0.1, 0.4, 0.2))  # tall along the file's y
    path = write_mesh(tmp_path / f"tall.{fmt}", tall.vertices, tall.faces)
    obj = load_object(path, units="m", up="y")
    np.testing.assert_allclose(obj.extents, [0.1, 0.2, 0.4], rtol=rtol_for(fmt))
    assert int(np.argmax(obj.extents)) == 2


def test_ascii_stl_loads_like_binary(tmp_path):
    cube = box()
    path = tmp_path / "ascii.stl"
    path.write_text(trimesh.exchange.stl.export_stl_ascii(cube))
    obj = load_object(path, units="mm", up="z")
    np.testing.assert_allclose(obj.extents, BOX_EXTENTS / 1000, rtol=1e-6)
    assert obj.volume == pytest.approx(float(np.prod(BOX_EXTENTS / 1000)), rel=1e-5)


def test_y_up_maps_a_marked_vertex_as_the_rotation_says(tmp_path):
    # a tetrahedron whose apex sits on the file's +y axis must end up on +z (after centring)
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    path = write_mesh(tmp_path / "tet.ply", vertices, faces)
    obj = load_object(path, units="m", up="y")
    expected = vertices @ reference_up_rotation("y").T
    expected -= (expected.min(axis=0) + expected.max(axis=0)) / 2
    distances, _ = cKDTree(expected).query(obj.vertices)
    assert distances.max() < 1e-12
    assert obj.volume == pytest.approx(abs(reference_volume(vertices, faces)), rel=1e-12)


def test_glb_scene_is_flattened_with_node_transforms(tmp_path):
    scene = trimesh.Scene()
    scene.add_geometry(box(extents=(0.2, 0.2, 0.2)), node_name="moved",
                       transform=trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]) @
                       np.diag([1.0, 1.0, 3.0, 1.0]))  # fmt: skip
    path = tmp_path / "scene.glb"
    path.write_bytes(scene.export(file_type="glb"))
    obj = load_object(path, units="m", up="z")
    # the node stretches z by 3 and then rotates z onto -y: the long edge lies along y
    np.testing.assert_allclose(obj.extents, [0.2, 0.6, 0.2], rtol=RTOL["float32"])
    assert obj.volume == pytest.approx(0.2 * 0.6 * 0.2, rel=1e-5)


def test_urdf_scale_is_applied_before_units(tmp_path):
    cube = box(extents=(1.0, 2.0, 3.0))
    write_mesh(tmp_path / "cube.obj", cube.vertices, cube.faces)
    (tmp_path / "cube.urdf").write_text(
        '<robot name="r"><link name="l"><visual><geometry>'
        '<mesh filename="cube.obj" scale="2 1 0.5"/></geometry></visual></link></robot>'
    )
    [source] = discover_meshes(tmp_path / "cube.urdf")
    assert source.scale == (2.0, 1.0, 0.5) and source.name == "cube"
    obj = load_object(source, units="cm", up="z")
    np.testing.assert_allclose(obj.extents, [0.02, 0.02, 0.015], rtol=1e-9)


# ---------------------------------------------------------------- repair


def test_small_hole_is_filled_exactly(tmp_path):
    closed = box()
    smallest = int(np.argmin(closed.area_faces))  # a hole of 3.7% of the area, below the 10% limit
    path = write_mesh(tmp_path / "holed.obj", closed.vertices, np.delete(closed.faces, smallest, axis=0))
    assert not trimesh.load(path, force="mesh").is_watertight
    obj = load_object(path, units="m", up="z")
    assert obj.watertight and obj.volume_note == EXACT_NOTE
    assert obj.volume == pytest.approx(reference_volume(closed.vertices, closed.faces), rel=1e-12)
    assert any(note.startswith("filled 1 holes (3 boundary edges") for note in obj.repairs)


def test_larger_hole_is_fanned_around_its_centroid(tmp_path):
    closed = sphere(radius=0.3, subdivisions=3)
    apex = 0
    ring_faces = np.flatnonzero((closed.faces == apex).any(axis=1))
    ring = np.unique(closed.faces[ring_faces])
    ring = ring[ring != apex]
    assert len(ring) >= 5  # so the fan (not a single triangle) is what closes it
    path = write_mesh(tmp_path / "holed.ply", closed.vertices, np.delete(closed.faces, ring_faces, axis=0))
    obj = load_object(path, units="m", up="z")
    # reference: the fan around the loop's mean equals the closed mesh with its apex moved to that mean
    moved = closed.vertices.copy()
    moved[apex] = closed.vertices[ring].mean(axis=0)
    assert obj.watertight and obj.volume is not None
    assert obj.volume == pytest.approx(reference_volume(moved, closed.faces), rel=1e-9)
    assert obj.volume == pytest.approx(closed.volume, rel=0.01)
    assert any(note.startswith(f"filled 1 holes ({len(ring)} boundary edges") for note in obj.repairs)


def test_fin_on_a_non_manifold_edge_is_a_separate_component_and_dropped(tmp_path):
    closed = box()
    # a fin: an extra triangle on an existing edge makes that edge shared by three faces; faces are
    # connected only through edges shared by exactly two faces, so the fin is its own component
    a, b = closed.faces[0][:2]
    tip = len(closed.vertices)
    fin_vertices = np.vstack([closed.vertices, closed.vertices[[a, b]].mean(axis=0) + [0.0, 0.0, 1.0]])
    path = write_mesh(tmp_path / "fin.obj", fin_vertices, np.vstack([closed.faces, [[a, b, tip]]]))
    obj = load_object(path, units="m", up="z")
    assert obj.watertight and obj.volume == pytest.approx(float(np.prod(BOX_EXTENTS)), rel=1e-12)
    fin_area = 0.5 * np.linalg.norm(np.cross(*(fin_vertices[[b, tip]] - fin_vertices[a])))
    share = 100 * fin_area / (fin_area + closed.area)
    note = f"kept the largest of 2 connected components by surface area (dropped 1 holding {share:.2f}% of the area)"
    assert note in obj.repairs


def test_unrepairable_meshes_get_no_volume_and_say_why(tmp_path):
    # two holes meeting at one vertex (a bow tie): no simple loop to close
    ball = sphere(radius=0.3, subdivisions=2)
    first = 0
    shares_vertex = (np.isin(ball.faces, ball.faces[first]).sum(axis=1) == 1)
    second = int(np.flatnonzero(shares_vertex)[0])
    path = write_mesh(tmp_path / "bowtie.obj", ball.vertices, np.delete(ball.faces, [first, second], axis=0))
    obj = load_object(path, units="m", up="z")
    assert not obj.watertight and obj.volume is None
    assert obj.volume_note == "unknown: not watertight after repair (boundary loops touch at a vertex)"

    closed = box()
    # a missing +x side (0.3 x 0.5 m): closing it would add 44% of the remaining area, more than 10%
    side = np.flatnonzero(np.isclose(closed.triangles_center[:, 0], BOX_EXTENTS[0] / 2))
    path = write_mesh(tmp_path / "open_top.obj", closed.vertices, np.delete(closed.faces, side, axis=0))
    obj = load_object(path, units="m", up="z")
    assert not obj.watertight and obj.volume is None
    assert "holes too large to fill: closing 1 holes would add 43.9% of the surface area" in obj.volume_note
    filled = load_object(path, units="m", up="z", max_fill_area_fraction=0.5)
    assert filled.watertight and filled.volume == pytest.approx(float(np.prod(BOX_EXTENTS)), rel=1e-12)


def test_floating_component_is_dropped_largest_by_area_is_kept(tmp_path):
    ball = sphere(radius=0.25)
    speck = box(extents=(0.01, 0.01, 0.01), centre=(1.0, 0.0, 0.0))
    merged = trimesh.util.concatenate([speck, ball])  # the speck comes first in the file
    path = write_mesh(tmp_path / "two.off", merged.vertices, merged.faces)
    obj = load_object(path, units="m", up="z")
    assert obj.watertight and len(obj.faces) == len(ball.faces)
    assert obj.volume == pytest.approx(reference_volume(ball.vertices, ball.faces), rel=1e-9)
    np.testing.assert_allclose(obj.extents, ball.extents, rtol=1e-12)
    [note] = [note for note in obj.repairs if note.startswith("kept the largest")]
    assert note.startswith("kept the largest of 2 connected components by surface area (dropped 1 holding")


def test_inverted_and_inconsistent_winding_are_fixed():
    closed = box()
    expected = float(np.prod(BOX_EXTENTS))
    inverted = repair_mesh(vertices=closed.vertices, faces=closed.faces[:, ::-1])
    assert inverted.volume == pytest.approx(expected, rel=1e-12)
    assert "flipped all faces (the mesh was inside out)" in inverted.repairs
    faces = closed.faces.copy()
    faces[[1, 4]] = faces[[1, 4], ::-1]
    mixed = repair_mesh(vertices=closed.vertices, faces=faces)
    assert mixed.watertight and mixed.volume == pytest.approx(expected, rel=1e-12)
    assert any(note.startswith("reversed the winding of 2 faces") for note in mixed.repairs)
    assert repair_mesh(vertices=closed.vertices, faces=closed.faces).repairs == ()


def test_split_vertices_are_merged_into_a_watertight_mesh():
    closed = box()
    soup = closed.vertices[closed.faces].reshape(-1, 3)  # every face has its own three vertices
    result = repair_mesh(vertices=soup, faces=np.arange(len(soup)).reshape(-1, 3))
    assert result.watertight and len(result.vertices) == 8
    assert result.repairs == ("merged 28 duplicate vertices",)


# ---------------------------------------------------------------- bad input


def tilted(vertices: np.ndarray) -> np.ndarray:
    return vertices @ Rotation.from_rotvec([0.5, 0.3, 0.0]).as_matrix().T


BAD_FILES = {
    "corrupt.ply": lambda: b"ply\n" + np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
    "corrupt.glb": lambda: b"glTF" + np.random.default_rng(2).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
    "corrupt.obj": lambda: np.random.default_rng(3).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
    "empty.stl": lambda: b"",
    "nan.obj": lambda: b"v nan 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nv inf 1 1\n"
    b"f 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\nf 2 3 5\n",
    "outside.obj": lambda: b"v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 9\n",
    "points.ply": lambda: b"ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
    b"property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n",
}
EXPECTED_MESSAGES = {
    "corrupt.ply": (MeshFileError, "PLY"),
    "corrupt.glb": (MeshFileError, "GLB"),
    "corrupt.obj": (MeshFileError, "contains no triangles"),
    "empty.stl": (MeshFileError, "file is empty"),
    "nan.obj": (DegenerateMeshError, "2 of 5 vertices are not finite"),
    "outside.obj": (MeshFileError, "out of bounds"),
    "points.ply": (MeshFileError, "contains no triangles"),
}


def write_bad_files(folder: Path) -> dict[str, Path]:
    paths = {name: folder / name for name in BAD_FILES}
    for name, make in BAD_FILES.items():
        paths[name].write_bytes(make())
    flat = box(extents=(0.3, 0.2, 0.0))
    paths["flat.stl"] = write_mesh(folder / "flat.stl", flat.vertices, flat.faces)
    paths["tilted_flat.obj"] = write_mesh(folder / "tilted_flat.obj", tilted(flat.vertices), flat.faces)
    thin = box(extents=(1.0, 1.0, 1e-7))
    paths["thin.ply"] = write_mesh(folder / "thin.ply", tilted(thin.vertices), thin.faces)
    return paths


EXPECTED_MESSAGES.update({
    "flat.stl": (DegenerateMeshError, "zero extent along z"),
    "tilted_flat.obj": (DegenerateMeshError, "lie in one plane"),
    "thin.ply": (DegenerateMeshError, "encloses no volume"),
})  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED_MESSAGES))
def test_bad_file_is_a_clear_one_line_error_naming_it(tmp_path, name):
    path = write_bad_files(tmp_path)[name]
    error_type, phrase = EXPECTED_MESSAGES[name]
    with pytest.raises(error_type) as caught:
        load_object(path, units="m", up="z")
    message = str(caught.value)
    assert isinstance(caught.value, PointstnError)
    assert message.startswith(str(path)) and phrase in message and "\n" not in message


def test_missing_file_too_large_file_and_bad_arguments(tmp_path):
    with pytest.raises(MeshFileError, match="does not exist"):
        load_object(tmp_path / "nope.obj", units="m", up="z")
    cube = box()
    path = write_mesh(tmp_path / "cube.stl", cube.vertices, cube.faces)
    with pytest.raises(MeshFileError, match="max_file_bytes=100"):
        load_object(path, units="m", up="z", max_file_bytes=100)
    with pytest.raises(MeshFileError, match="max_faces=10"):
        load_object(path, units="m", up="z", max_faces=10)
    with pytest.raises(PointstnError, match="unknown units 'inch'; declare one of: m, cm, mm"):
        load_object(path, units="inch", up="z")
    with pytest.raises(PointstnError, match="unknown up axis 'x'; declare one of: z, y"):
        ingest(tmp_path, units="m", up="x")


def hostile_headers(folder: Path) -> dict[str, Path]:
    """Files whose headers claim 10^9 faces (or 2^40 instanced meshes) over a few hundred bytes."""
    billion = 10**9
    files = {
        "ascii.ply": (f"ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
                      f"property float z\nelement face {billion}\nproperty list uchar int vertex_indices\n"
                      "end_header\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n").encode(),
        "binary.ply": (f"ply\nformat binary_little_endian 1.0\nelement vertex 4\nproperty float x\n"
                       f"property float y\nproperty float z\nelement face {billion}\n"
                       "property list uchar int vertex_indices\nend_header\n").encode() + bytes(100),
        "header.off": f"OFF\n4 {billion} 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n".encode(),
        "binary.stl": bytes(80) + struct.pack("<I", billion) + bytes(100),
    }  # fmt: skip
    paths = {}
    for name, data in files.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    # a GLB whose one small mesh is instanced 2^40 times through a chain of doubling nodes
    cube = box()
    document_bytes = cube.export(file_type="glb")
    (chunk_length,) = struct.unpack("<I", document_bytes[12:16])
    document = json.loads(document_bytes[20 : 20 + chunk_length])
    mesh_node = {"mesh": document["nodes"][-1].get("mesh", 0)}
    document["nodes"] = [mesh_node] + [{"children": [k, k]} for k in range(40)]
    document["scenes"] = [{"nodes": [40]}]
    document["scene"] = 0
    payload = json.dumps(document).encode()
    payload += b" " * (-len(payload) % 4)
    binary = document_bytes[20 + chunk_length :]
    total = 12 + 8 + len(payload) + len(binary)
    paths["bomb.glb"] = folder / "bomb.glb"
    paths["bomb.glb"].write_bytes(
        b"glTF" + struct.pack("<II", 2, total) + struct.pack("<I", len(payload)) + b"JSON" + payload + binary
    )
    return paths


@pytest.mark.parametrize("max_faces", [2_000_000, 10**12])
def test_hostile_face_counts_fail_fast_without_allocating(tmp_path, max_faces):
    # with the default limit the count itself is refused; with a huge limit the size check refuses it
    for name, path in hostile_headers(tmp_path).items():
        tracemalloc.start()
        start = time.perf_counter()
        with pytest.raises(MeshFileError) as caught:
            load_object(path, units="m", up="z", max_faces=max_faces)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        message = str(caught.value)
        assert message.startswith(str(path)), message
        if name == "bomb.glb":
            assert f"declares {12 * 2**40} faces" in message or "max_faces" in message, message
        elif max_faces < 10**9:
            assert "declares 1000000000" in message and f"max_faces={max_faces}" in message, message
        else:
            assert "truncated file or hostile header" in message, message
        assert elapsed < 1.0 and peak < 20 * 2**20, (name, elapsed, peak)


def test_ingest_reports_bad_files_and_loads_the_good_ones(tmp_path):
    bad = write_bad_files(tmp_path)
    bad.update(hostile_headers(tmp_path))
    cube, ball = box(), sphere()
    (tmp_path / "good").mkdir()
    write_mesh(tmp_path / "good" / "cube.obj", cube.vertices, cube.faces)
    write_mesh(tmp_path / "good" / "ball.glb", ball.vertices, ball.faces)
    (tmp_path / "README.txt").write_text("not a mesh")
    report = ingest(tmp_path, units="m", up="z", family="mine")
    assert [obj.name for obj in report.objects] == ["good-ball", "good-cube"]
    assert all(obj.family == "mine" and obj.watertight for obj in report.objects)
    assert report.objects[1].volume == pytest.approx(float(np.prod(BOX_EXTENTS)), rel=1e-12)
    assert sorted(path for path, _ in report.failures) == sorted(str(path) for path in bad.values())
    assert all(reason.startswith(path) and "\n" not in reason for path, reason in report.failures)
    assert report.skipped == [(str(tmp_path / "README.txt"), report.skipped[0][1])]
    assert "unsupported file type '.txt'" in report.skipped[0][1]


# ---------------------------------------------------------------- discovery, URDF, names


URDF = """<robot name="{name}"><link name="base">
  <visual><geometry><mesh filename="{visual}"{scale}/></geometry></visual>
  <collision><geometry><mesh filename="{collision}"/></geometry></collision>
</link></robot>"""


def write_urdf(path: Path, *, visual: str, collision: str, scale: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(URDF.format(name=path.stem, visual=visual, collision=collision,
                                scale=f' scale="{scale}"' if scale else ""))  # fmt: skip
    return path


def test_urdf_discovery_resolves_package_and_relative_paths_and_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    cube = box()
    for mesh_path in ["robot/meshes/body.obj", "robot/meshes/body_coll.stl", "rel/parts/part.ply",
                      "loose/thing.off", "outside.obj"]:  # fmt: skip
        target = (tmp_path if mesh_path == "outside.obj" else root) / mesh_path
        target.parent.mkdir(parents=True, exist_ok=True)
        write_mesh(target, cube.vertices, cube.faces)
    write_urdf(root / "robot/urdf/robot.urdf", visual="package://robot/meshes/body.obj",
               collision="../meshes/body_coll.stl", scale="2 2 2")  # fmt: skip
    write_urdf(root / "rel/thing.urdf", visual="parts/part.ply", collision="parts/part.ply")
    write_urdf(root / "evil/dotdot.urdf", visual="../../outside.obj", collision="../../outside.obj")
    (root / "evil/link.obj").symlink_to(tmp_path / "outside.obj")
    write_urdf(root / "evil/symlink.urdf", visual="link.obj", collision="link.obj")
    write_urdf(root / "evil/dae.urdf", visual="mesh.dae", collision="../loose/thing.off")
    (root / "evil/mesh.dae").write_text("<COLLADA/>")
    (root / "evil/doctype.urdf").write_text('<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><robot>&x;</robot>')

    found = discover(root)
    by_name = {source.name: source for source in found.sources}
    assert list(by_name) == ["evil-dae", "rel-thing", "robot-urdf-robot"]
    assert by_name["robot-urdf-robot"].path == (root / "robot/meshes/body.obj").resolve()
    assert by_name["robot-urdf-robot"].scale == (2.0, 2.0, 2.0)
    assert by_name["rel-thing"].path == (root / "rel/parts/part.ply").resolve()
    # dae is not loadable, so the collision mesh is used (and not listed again on its own)
    assert by_name["evil-dae"].path == (root / "loose/thing.off").resolve()
    refused = " | ".join(reason for _, reason in found.refused)
    assert "'../../outside.obj' resolves to" in refused and "outside the root folder" in refused
    assert f"{root / 'evil/link.obj'}: resolves to {(tmp_path / 'outside.obj').resolve()}" in refused
    assert "'link.obj' resolves to" in refused  # the symlinked reference is refused too
    assert "unsupported mesh format '.dae'" in refused
    assert "DOCTYPE or ENTITY" in refused
    refused_paths = {path for path, _ in found.refused}
    evil = ["dotdot.urdf", "symlink.urdf", "doctype.urdf", "link.obj"]
    assert refused_paths >= {str(root / "evil" / name) for name in evil}
    assert [skipped for skipped, _ in found.skipped] == [str(root / "evil/mesh.dae")]

    report = ingest(root, units="m", up="z")
    robot = next(obj for obj in report.objects if obj.name == "robot-urdf-robot")
    np.testing.assert_allclose(robot.extents, 2 * BOX_EXTENTS, rtol=1e-9)
    assert len(report.objects) == 3 and len(report.failures) == len(found.refused)


def test_urdf_with_package_reference_outside_root_is_refused(tmp_path):
    cube = box()
    (tmp_path / "pkg/meshes").mkdir(parents=True)
    write_mesh(tmp_path / "pkg/meshes/a.obj", cube.vertices, cube.faces)
    reference = "package://pkg/meshes/a.obj"
    urdf = write_urdf(tmp_path / "pkg/urdf/a.urdf", visual=reference, collision=reference)
    with pytest.raises(PointstnError, match="matched no mesh files.*package folder .* is outside it"):
        discover_meshes(urdf)  # root defaults to the URDF's own folder
    [source] = discover_meshes(urdf, root=tmp_path / "pkg")
    assert source.path == (tmp_path / "pkg/meshes/a.obj").resolve() and source.name == "urdf-a"


def test_names_are_sanitized_unique_and_independent_of_creation_order(tmp_path):
    cube = box()
    relative = ["b/Oak Chair.obj", "box.obj", "box.stl", "a/b.obj", "a-b.ply", "z/deep/x.off", "c/d.glb"]
    listings = []
    for trial, order in enumerate([relative, relative[::-1], sorted(relative)]):
        folder = tmp_path / f"trial{trial}"
        for name in order:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            write_mesh(folder / name, cube.vertices, cube.faces)
        sources = discover_meshes(folder)
        listings.append([(source.name, source.path.relative_to(folder).as_posix()) for source in sources])
    assert listings[0] == listings[1] == listings[2]
    assert listings[0] == [  # sorted by relative path: "-" sorts before "/"
        ("a-b_ply", "a-b.ply"),
        ("a-b_obj", "a/b.obj"),
        ("b-Oak_Chair", "b/Oak Chair.obj"),
        ("box_obj", "box.obj"),
        ("box_stl", "box.stl"),
        ("c-d", "c/d.glb"),
        ("z-deep-x", "z/deep/x.off"),
    ]
    same = discover_meshes(str(tmp_path / "trial0" / "**" / "*.obj"))
    assert [source.name for source in same] == ["a-b", "b-Oak_Chair", "box"]


def test_numeric_suffix_breaks_remaining_collisions(tmp_path):
    cube = box()
    for name in ["a/b.obj", "a-b.obj", "a_b.obj"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write_mesh(tmp_path / name, cube.vertices, cube.faces)
    names = [source.name for source in discover_meshes(tmp_path)]
    assert names == ["a-b_obj", "a-b_obj-2", "a_b"]


def test_spec_matching_nothing_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PointstnError, match="matched no mesh files.*1 other files skipped"):
        discover_meshes(tmp_path)
    with pytest.raises(PointstnError, match="no such file or folder"):
        discover_meshes(tmp_path / "missing")
    with pytest.raises(PointstnError, match="matched no mesh files"):
        discover_meshes(str(tmp_path / "*.obj"))
    with pytest.raises(PointstnError, match="unsupported file type '.txt'"):
        discover_meshes(tmp_path / "notes.txt")


def test_pybullet_random_urdfs_with_a_fake_data_folder(tmp_path, monkeypatch):
    blob = sphere(radius=1.0, subdivisions=1)
    for index in ["001", "000"]:
        folder = tmp_path / "random_urdfs" / index
        folder.mkdir(parents=True)
        write_mesh(folder / f"{index}.obj", blob.vertices, blob.faces)
        write_urdf(folder / f"{index}.urdf", visual=f"{index}.obj", collision=f"{index}.obj", scale="0.015 0.015 0.015")
    monkeypatch.setitem(sys.modules, "pybullet_data", types.SimpleNamespace(getDataPath=lambda: str(tmp_path)))
    sources = pybullet_random_urdfs()
    assert [source.name for source in sources] == ["random_urdfs-000-000", "random_urdfs-001-001"]
    assert all(source.scale == (0.015,) * 3 for source in sources)
    obj = load_object(sources[0], units="m", up="z")
    assert obj.volume == pytest.approx(reference_volume(blob.vertices * 0.015, blob.faces), rel=1e-9)

    monkeypatch.setitem(sys.modules, "pybullet_data", None)  # makes `import pybullet_data` fail
    with pytest.raises(MissingDependencyError, match="pip install pybullet") as caught:
        pybullet_random_urdfs()
    assert caught.value.package == "pybullet"
