"""R2N2Dataset on a fake 3D-R2N2 + OccNet tree whose views are rendered from an independently built camera."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from pointstn.data.augment import Augmentation
from pointstn.data.dataset import Sample
from pointstn.data.r2n2 import R2N2Dataset, pytorch3d_camera, shapenet_extrinsics_opengl
from pointstn.errors import PointstnError

SIZE = 137
NUM_POINTS = 3000
POSE_ATOL_F64 = 1e-10
POINT_ATOL_F32 = 2e-5
# synset -> model -> (kind, size, offset, metadata rows: azimuth, elevation, in-plane, distance ratio, fov)
MODELS = {
    "02691156": {
        "a1b2c3": ("box", (0.50, 0.30, 0.36), (0.04, -0.03, 0.02),
                   [(30.0, 25.0, 0.0, 0.70, 25.0), (147.5, 28.0, 0.0, 0.80, 25.0), (260.0, -35.0, 20.0, 0.75, 25.0)]),
        "d4e5f6": ("cylinder", (0.18, 0.55), (-0.02, 0.05, 0.01),
                   [(300.0, 26.5, 0.0, 0.85, 25.0), (10.0, 60.0, -15.0, 0.90, 25.0), (95.0, 29.0, 0.0, 0.66, 25.0)]),
    },
    "03001627": {
        "0f9e8d": ("box", (0.28, 0.52, 0.22), (0.00, 0.02, -0.05),
                   [(200.0, 27.0, 0.0, 0.72, 25.0), (75.0, 10.0, 0.0, 0.88, 25.0), (330.0, 30.0, 35.0, 0.78, 25.0)]),
        "7c6b5a": ("cylinder", (0.22, 0.40), (0.03, 0.00, 0.04),
                   [(120.0, 25.5, 0.0, 0.68, 25.0), (225.0, -20.0, 0.0, 0.82, 25.0), (355.0, 45.0, 0.0, 0.74, 25.0)]),
    },
}


def shapenet_mesh(kind: str, size: tuple, offset: tuple):
    """A mesh in ShapeNet axes (+y up), off-centre so the object frame's centring is exercised."""
    import trimesh

    if kind == "box":
        mesh = trimesh.creation.box(extents=size)
    else:
        mesh = trimesh.creation.cylinder(radius=size[0], height=size[1], sections=48)
        mesh.apply_transform(trimesh.transformations.rotation_matrix(-math.pi / 2, [1, 0, 0]))  # axis z -> y
    mesh.apply_translation(offset)
    return mesh


def blender_camera(azimuth, elevation, in_plane, ratio) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV camera-from-ShapeNet (R, t), built like 3D-R2N2's Blender scene (lib/blender_renderer.py).

    The camera sits at (ratio * 1.75, 0, 0) with Euler 'ZXY' (0, 90, 90) deg under a parent empty with
    Euler 'XYZ' (-in_plane, -elevation, -azimuth); Blender's OBJ import turns the file's +y up into +z.
    """
    parent = Rotation.from_euler("xyz", [-in_plane, -elevation, -azimuth], degrees=True).as_matrix()
    local = Rotation.from_euler("zxy", [90.0, 0.0, 90.0], degrees=True).as_matrix()  # z first, then x, then y
    world_from_camera_gl = parent @ local
    camera_position = parent @ np.array([ratio * 1.75, 0.0, 0.0])
    blender_from_shapenet = Rotation.from_euler("x", 90.0, degrees=True).as_matrix()
    gl_from_shapenet = world_from_camera_gl.T @ blender_from_shapenet
    opencv_from_gl = np.diag([1.0, -1.0, -1.0])
    return opencv_from_gl @ gl_from_shapenet, opencv_from_gl @ (-world_from_camera_gl.T @ camera_position)


def blender_intrinsics(size: int) -> np.ndarray:
    """Blender's default camera: 35 mm lens on a 32 mm sensor fitted to the image width."""
    focal = 35.0 / 32.0 * size
    return np.array([[focal, 0.0, (size - 1) / 2], [0.0, focal, (size - 1) / 2], [0.0, 0.0, 1.0]])


def write_rgba(path: Path, rgba: np.ndarray, mode: str = "RGBA") -> None:
    image = Image.fromarray(rgba, "RGBA")
    (image if mode == "RGBA" else image.convert(mode)).save(path)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """<tmp>/ShapeNetRendering/... and <tmp>/ShapeNet/... for 2 synsets x 2 models x 3 views."""
    from pointstn.data.render.appearance import Appearance
    from pointstn.data.render.backend import Renderer

    root = tmp_path_factory.mktemp("r2n2")
    with Renderer(width=SIZE, height=SIZE) as renderer:
        for synset, models in MODELS.items():
            for model, (kind, size, offset, rows) in models.items():
                mesh = shapenet_mesh(kind, size, offset)
                points, faces = mesh.sample(NUM_POINTS, return_index=True, seed=len(model) + int(synset))
                lo, hi = mesh.bounds
                loc, scale = (lo + hi) / 2, (hi - lo).max() / (1 - 0.1)
                folder = root / "ShapeNet" / synset / model
                folder.mkdir(parents=True)
                np.savez(folder / "pointcloud.npz", points=((points - loc) / scale).astype(np.float32),
                         normals=mesh.face_normals[faces].astype(np.float32), loc=loc, scale=scale)
                rendering = root / "ShapeNetRendering" / synset / model / "rendering"
                rendering.mkdir(parents=True)
                (rendering / "rendering_metadata.txt").write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
                for view, row in enumerate(rows):
                    R, t = blender_camera(*row[:4])
                    pose = np.eye(4)
                    pose[:3, :3], pose[:3, 3] = R, t
                    result = renderer.render(vertices=mesh.vertices, faces=mesh.faces, camera_from_object=pose,
                                             intrinsics=blender_intrinsics(SIZE),
                                             appearance=Appearance.plain(height=SIZE, width=SIZE))
                    rgb = np.where(result.mask[..., None], result.rgb, 0).astype(np.uint8)  # transparent = black
                    alpha = (result.mask * 255).astype(np.uint8)[..., None]
                    write_rgba(rendering / f"{view:02d}.png", np.concatenate([rgb, alpha], axis=-1))
    return root


@pytest.fixture
def copy(tree, tmp_path) -> Path:
    """A private copy of the tree for tests that damage it."""
    shutil.copytree(tree, tmp_path / "tree")
    return tmp_path / "tree"


def dataset(root: Path, **kwargs) -> R2N2Dataset:
    kwargs.setdefault("split", None)
    return R2N2Dataset(root / "ShapeNetRendering", root / "ShapeNet", **kwargs)


def shapenet_points(root: Path, object_id: str) -> np.ndarray:
    """The stored points de-normalised to ShapeNet coordinates, float64 (N, 3)."""
    with np.load(root / "ShapeNet" / object_id / "pointcloud.npz") as data:
        return data["points"].astype(np.float64) * float(data["scale"]) + data["loc"]


def fraction_inside_mask(sample: Sample, rotation=None, translation=None) -> float:
    """Fraction of all points (convex objects: all project into the silhouette) in the mask grown by a pixel."""
    R = sample.rotation if rotation is None else rotation
    t = sample.translation if translation is None else translation
    uv = (sample.points @ R.T + t) @ sample.intrinsics.T
    col, row = (uv[:, :2] / uv[:, 2:]).round().long().T
    size = sample.mask.shape[-1]
    ok = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    grown = torch.nn.functional.max_pool2d(sample.mask[None, None], 3, stride=1, padding=1)[0, 0]
    return float(grown[row[ok], col[ok]].sum() / len(sample.points))


def test_pose_equals_the_blender_scene_construction(tree):
    ds = dataset(tree)
    assert len(ds) == 12 and ds.families == sorted(MODELS) and ds.skipped == ()
    blender_from_shapenet = Rotation.from_euler("x", 90.0, degrees=True).as_matrix()
    for item in range(len(ds)):
        object_index, view = ds.items[item]
        synset, model = ds.object_ids[object_index].split("/")
        R_sn, t_sn = blender_camera(*MODELS[synset][model][3][view][:4])
        p_sn = shapenet_points(tree, ds.object_ids[object_index])
        centre = (p_sn.min(0) + p_sn.max(0)) / 2
        pose = ds.pose(item)
        np.testing.assert_allclose(pose.rotation, R_sn @ blender_from_shapenet.T, atol=POSE_ATOL_F64, rtol=0)
        np.testing.assert_allclose(pose.translation, R_sn @ centre + t_sn, atol=POSE_ATOL_F64, rtol=0)
        s = ds[item]
        # frame-independent: the sample's camera-frame points are the ShapeNet points seen by the Blender camera
        np.testing.assert_allclose(s.points_camera.numpy(), p_sn @ R_sn.T + t_sn, atol=POINT_ATOL_F32, rtol=0)
        np.testing.assert_allclose(s.points.numpy(), (p_sn - centre) @ blender_from_shapenet.T,
                                   atol=POINT_ATOL_F32, rtol=0)
        np.testing.assert_allclose(s.intrinsics.numpy(), blender_intrinsics(SIZE), rtol=1e-6)


def test_sample_fields_frames_and_mask_consistency(tree):
    ds = dataset(tree, num_points=1024)
    for item in range(len(ds)):
        s = ds[item]
        assert s._fields == Sample._fields
        assert s.image.shape == (3, SIZE, SIZE) and s.image.dtype == torch.float32
        assert 0.0 <= float(s.image.min()) and float(s.image.max()) <= 1.0
        assert s.mask.shape == (SIZE, SIZE) and set(s.mask.unique().tolist()) == {0.0, 1.0}
        assert 0.03 < float(s.mask.mean()) < 0.7
        assert s.points.shape == s.normals.shape == s.points_camera.shape == (1024, 3)
        torch.testing.assert_close(s.points_camera, s.points @ s.rotation.T + s.translation)
        torch.testing.assert_close(s.rotation @ s.rotation.T, torch.eye(3), atol=1e-6, rtol=0)
        assert float(torch.linalg.det(s.rotation)) == pytest.approx(1.0, abs=1e-6)
        torch.testing.assert_close(s.normals.norm(dim=1), torch.ones(1024), atol=1e-5, rtol=0)
        assert math.isnan(float(s.volume))
        object_id = ds.object_ids[int(s.object_index)]
        synset, model = object_id.split("/")
        kind, size, _, rows = MODELS[synset][model]
        expected = size if kind == "box" else (2 * size[0], size[1], 2 * size[0])  # ShapeNet x, y (up), z
        # object frame = ShapeNet turned +y-up -> +z-up: extents (x, z, y) of the ShapeNet model
        np.testing.assert_allclose(s.extents.numpy(), [expected[0], expected[2], expected[1]], atol=0.02)
        assert ds.families[int(s.family_index)] == synset and int(s.view_index) == ds.items[item][1]
        _, elevation, in_plane, _, _ = rows[int(s.view_index)]
        expected_bin = "below" if elevation < -10 else "roll" if abs(in_plane) > 15 else "canonical"
        assert ds.bins[int(s.bin_index)] == expected_bin
        assert fraction_inside_mask(s) >= 0.99
        # object +z (up) points up in the image (-y) for every view without in-plane rotation
        if in_plane == 0:
            assert float(-s.rotation[1, 2]) > 0


def test_in_plane_rotation_sign_is_checked_by_the_mask(tree):
    ds = dataset(tree)
    item = next(i for i, (o, v) in enumerate(ds.items) if ds.object_ids[o] == "03001627/0f9e8d" and v == 2)
    s = ds[item]
    assert fraction_inside_mask(s) >= 0.99
    turn = torch.from_numpy(Rotation.from_euler("z", 2 * 35.0, degrees=True).as_matrix()).float()  # undo, re-apply
    assert fraction_inside_mask(s, turn @ s.rotation, turn @ s.translation) < 0.95
    assert fraction_inside_mask(s, turn.T @ s.rotation, turn.T @ s.translation) < 0.95


def test_pytorch3d_camera_projects_to_the_same_pixels(tree):
    ds = dataset(tree, num_points=256)
    for item in range(len(ds)):
        object_index, view = ds.items[item]
        synset, model = ds.object_ids[object_index].split("/")
        azimuth, elevation, in_plane, ratio, _ = MODELS[synset][model][3][view]
        if in_plane != 0:  # PyTorch3D ignores the in-plane angle
            continue
        p_sn = shapenet_points(tree, ds.object_ids[object_index])[:256]
        R, T = pytorch3d_camera(shapenet_extrinsics_opengl(azimuth_deg=azimuth, elevation_deg=elevation,
                                                           distance=ratio * 1.75))
        X = p_sn @ R + T  # PyTorch3D view frame: x left, y up, z forward
        ndc = 2.1875 * X[:, :2] / X[:, 2:]  # BlenderCamera K; NDC +x left, +y up, [-1, 1] across the image
        pixels_p3d = (1 - ndc) * SIZE / 2 - 0.5  # to OpenCV pixel centres (column, row)
        s = ds[item]
        uv = s.points_camera.double() @ s.intrinsics.double().T
        np.testing.assert_allclose((uv[:, :2] / uv[:, 2:]).numpy(), pixels_p3d, atol=1e-3)


def test_resizing_keeps_projection_consistent(tree):
    ds = dataset(tree, image_size=64, num_points=1024)
    native = dataset(tree, num_points=8)
    for item in range(len(ds)):
        s = ds[item]
        assert s.image.shape == (3, 64, 64) and s.mask.shape == (64, 64)
        assert float(s.intrinsics[0, 0]) == pytest.approx(float(native[item].intrinsics[0, 0]) * 64 / SIZE)
        assert fraction_inside_mask(s) >= 0.99


def test_background_compositing_roll_augmentation_and_batching(tree):
    white, blue = dataset(tree, num_points=512), dataset(tree, num_points=512, background=(0, 0, 255))
    a, b = white[0], blue[0]
    corner = (slice(None), 0, 0)
    assert a.image[corner].tolist() == [1.0, 1.0, 1.0] and b.image[corner].tolist() == [0.0, 0.0, 1.0]
    inside = a.mask.bool()
    torch.testing.assert_close(a.image[:, inside], b.image[:, inside])
    rolled = dataset(tree, num_points=512, augmentation=Augmentation(photometric=False, roll_probability=1.0))
    for item in range(0, len(rolled), 3):
        s = rolled[item]
        assert not torch.allclose(s.rotation, white[item].rotation) and fraction_inside_mask(s) >= 0.99
    batch = torch.utils.data.default_collate([white[0], white[1]])
    assert isinstance(batch, Sample) and batch.image.shape == (2, 3, SIZE, SIZE) and batch.points.shape == (2, 512, 3)


def test_random_point_subsets_vary_by_epoch_reproducibly(tree):
    ds = dataset(tree, num_points=256, deterministic=False)
    first = ds[0].points
    torch.testing.assert_close(ds[0].points, first)
    ds.set_epoch(1)
    assert not torch.equal(ds[0].points, first)


def test_split_files_synsets_and_views(tree, tmp_path):
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps({"train": {"02691156": ["a1b2c3"], "03001627": ["0f9e8d", "7c6b5a"]},
                                  "test": {"02691156": ["d4e5f6"]}}))
    ds = dataset(tree, split_file=listed, split="train")
    assert ds.object_ids == ["02691156/a1b2c3", "03001627/0f9e8d", "03001627/7c6b5a"] and len(ds) == 9
    assert dataset(tree, split_file=listed, split="test").object_ids == ["02691156/d4e5f6"]
    viewed = tmp_path / "pytorch3d.json"
    viewed.write_text(json.dumps({"train": {"02691156": {"a1b2c3": [0, 2], "d4e5f6": [1]}}}))
    assert dataset(tree, split_file=viewed, split="train").items == [(0, 0), (0, 2), (1, 1)]
    assert dataset(tree, split_file=viewed, split="train", views=[2]).items == [(0, 2)]
    for synset, models in (("02691156", "d4e5f6\n\n"), ("03001627", "7c6b5a\n0f9e8d\n")):
        (tree / "ShapeNet" / synset / "val.lst").write_text(models)
    try:
        ds = dataset(tree, split="val")
        assert ds.object_ids == ["02691156/d4e5f6", "03001627/7c6b5a", "03001627/0f9e8d"]
    finally:
        for synset in MODELS:
            (tree / "ShapeNet" / synset / "val.lst").unlink()
    ds = dataset(tree, synsets=["03001627"], views=[1])
    assert ds.object_ids == ["03001627/0f9e8d", "03001627/7c6b5a"] and len(ds) == 2
    assert {int(ds[i].view_index) for i in range(len(ds))} == {1}
    assert R2N2Dataset(tree, tree / "ShapeNet", split=None).object_ids == dataset(tree).object_ids  # parent folder


def test_model_without_points_is_skipped_and_logged(copy, caplog):
    (copy / "ShapeNet" / "02691156" / "a1b2c3" / "pointcloud.npz").unlink()
    shutil.rmtree(copy / "ShapeNetRendering" / "03001627" / "7c6b5a")
    for synset, models in MODELS.items():
        (copy / "ShapeNet" / synset / "train.lst").write_text("\n".join(models))
    with caplog.at_level(logging.WARNING, logger="pointstn.data.r2n2"):
        ds = dataset(copy, split="train")
    assert ds.object_ids == ["02691156/d4e5f6", "03001627/0f9e8d"] and len(ds) == 6
    assert [s.object_id for s in ds.skipped] == ["02691156/a1b2c3", "03001627/7c6b5a"]
    assert "pointcloud.npz" in ds.skipped[0].reason and "renderings" in ds.skipped[1].reason
    assert "skipped 2" in caplog.text
    assert dataset(copy).object_ids == ds.object_ids  # split=None lists the renderings' model folders
    for synset in MODELS:
        for cloud in (copy / "ShapeNet" / synset).glob("*/pointcloud.npz"):
            cloud.unlink()
    one_line_error("no usable R2N2 model", lambda: dataset(copy, split="train"))


def one_line_error(match: str, build) -> PointstnError:
    with pytest.raises(PointstnError, match=match) as info:
        build()
    assert "\n" not in str(info.value)
    return info.value


def test_bad_roots_splits_and_ids(copy, tmp_path):
    one_line_error("rendering root .*nowhere", lambda: R2N2Dataset(tmp_path / "nowhere", copy / "ShapeNet"))
    one_line_error("point-cloud root", lambda: R2N2Dataset(copy / "ShapeNetRendering", tmp_path / "nowhere"))
    one_line_error(r"ShapeNetRendering/99999999 does not exist", lambda: dataset(copy, synsets=["99999999"]))
    (copy / "ShapeNetRendering" / "99999999").mkdir()
    one_line_error(r"ShapeNet/99999999 does not exist", lambda: dataset(copy, synsets=["99999999"]))
    one_line_error(r"train\.lst does not exist", lambda: dataset(copy, split="train"))
    split_file = tmp_path / "split.json"
    one_line_error("cannot read split file", lambda: dataset(copy, split_file=split_file, split="train"))
    split_file.write_text(json.dumps({"train": {"02691156": ["../../../etc"]}}))
    one_line_error(r"split\.json: model '\.\./\.\./\.\./etc' is not a plain folder name",
                   lambda: dataset(copy, split_file=split_file, split="train"))
    one_line_error("has no split 'val'", lambda: dataset(copy, split_file=split_file, split="val"))
    split_file.write_text(json.dumps({"train": {"02691156": "a1b2c3"}}))
    one_line_error("must list model ids", lambda: dataset(copy, split_file=split_file, split="train"))
    for synset in MODELS:
        (copy / "ShapeNet" / synset / "train.lst").write_text("a1b2c3\n/etc\n")
    one_line_error("model '/etc' is not a plain folder name", lambda: dataset(copy, split="train"))


def test_bad_metadata(copy):
    metadata = copy / "ShapeNetRendering" / "02691156" / "d4e5f6" / "rendering" / "rendering_metadata.txt"
    good = metadata.read_text()
    for broken in ("\n", "300 26.5 0 0.85\n", "300 26.5 zero 0.85 25\n", "300 nan 0 0.85 25\n", "300 26.5 0 -1 25\n"):
        lines = good.splitlines(keepends=True)
        metadata.write_text(lines[0] + broken + lines[2])
        one_line_error(r"d4e5f6/rendering/rendering_metadata\.txt: line 2", lambda: dataset(copy))
    metadata.write_text(good.splitlines(keepends=True)[0])
    one_line_error(r"rendering_metadata\.txt has 1 views; view\(s\) \[2\]", lambda: dataset(copy, views=[0, 2]))
    metadata.unlink()
    one_line_error(r"d4e5f6/rendering/rendering_metadata\.txt is missing", lambda: dataset(copy))


@pytest.mark.parametrize("mode", ["L", "RGB", "LA"])
def test_images_must_be_rgba(copy, mode):
    path = copy / "ShapeNetRendering" / "02691156" / "a1b2c3" / "rendering" / "01.png"
    write_rgba(path, np.asarray(Image.open(path)), mode=mode)
    ds = dataset(copy, num_points=16)
    ds[0]  # view 00 is still fine
    one_line_error(rf"a1b2c3/rendering/01\.png has mode {mode}; RGBA", lambda: ds[1])


def test_bad_images_and_points(copy):
    rendering = copy / "ShapeNetRendering" / "02691156" / "a1b2c3" / "rendering"
    (rendering / "02.png").unlink()
    Image.new("RGBA", (137, 120)).save(rendering / "01.png")
    (rendering / "00.png").write_bytes(b"not a png")
    ds = dataset(copy, num_points=16)
    one_line_error(r"a1b2c3/rendering/00\.png", lambda: ds[0])
    one_line_error(r"01\.png is 137 x 120; square", lambda: ds[1])
    one_line_error(r"a1b2c3/rendering/02\.png", lambda: ds[2])
    one_line_error(rf"num_points=99999 exceeds the {NUM_POINTS} points in .*d4e5f6/pointcloud\.npz",
                   lambda: dataset(copy, num_points=99999)[3])
    cloud = copy / "ShapeNet" / "02691156" / "d4e5f6" / "pointcloud.npz"
    with np.load(cloud) as data:
        arrays = dict(data)
    points = arrays["points"].copy()
    points[5, 1] = np.nan
    np.savez(cloud, **{**arrays, "points": points})
    one_line_error(r"d4e5f6/pointcloud\.npz: array 'points' holds NaN", lambda: dataset(copy)[3])
    np.savez(cloud, points=arrays["points"], loc=arrays["loc"], scale=arrays["scale"])
    one_line_error(r"d4e5f6/pointcloud\.npz lacks array\(s\) \['normals'\]", lambda: dataset(copy)[3])
    np.savez(cloud, points=arrays["points"][:, :2], normals=arrays["normals"][:, :2])
    one_line_error(r"d4e5f6/pointcloud\.npz: points \(3000, 2\)", lambda: dataset(copy)[3])
    with pytest.raises(ValueError, match="views must be"):
        dataset(copy, views=[-1])
