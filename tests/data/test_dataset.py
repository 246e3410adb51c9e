"""Training samples: fields, frames, label-consistent augmentation, resizing, batching, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pointstn.data.augment import Augmentation, roll_image, rotation_z
from pointstn.data.dataset import PreparedDataset, Sample
from pointstn.data.format import MANIFEST_NAME, read_manifest
from pointstn.errors import PointstnError


def fraction_inside_mask(sample: Sample, rotation=None, translation=None) -> float:
    """Fraction of surface points (visible or hidden: all project into the silhouette) that land in the
    mask grown by one pixel (a point on the outline may round to the neighbouring background pixel)."""
    R = sample.rotation if rotation is None else rotation
    t = sample.translation if translation is None else translation
    cam = sample.points @ R.T + t
    uv = cam @ sample.intrinsics.T
    uv = uv[:, :2] / uv[:, 2:]
    col, row = uv.round().long().T
    size = sample.mask.shape[-1]
    ok = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    grown = torch.nn.functional.max_pool2d(sample.mask[None, None], 3, stride=1, padding=1)[0, 0]
    return float(grown[row[ok], col[ok]].sum() / len(cam))


def test_samples_have_documented_fields_and_frames(tiny_dataset):
    ds = PreparedDataset(tiny_dataset, split="train", num_points=512)
    manifest = read_manifest(tiny_dataset)
    assert len(ds) == 3 * len(manifest["splits"]["train"])
    s = ds[0]
    assert s.image.shape == (3, 64, 64) and s.image.dtype == torch.float32
    assert 0.0 <= float(s.image.min()) and float(s.image.max()) <= 1.0
    assert s.mask.shape == (64, 64) and set(s.mask.unique().tolist()) <= {0.0, 1.0}
    assert s.points.shape == s.normals.shape == s.points_camera.shape == (512, 3)
    torch.testing.assert_close(s.points_camera, s.points @ s.rotation.T + s.translation)
    torch.testing.assert_close(s.rotation @ s.rotation.T, torch.eye(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(s.normals.norm(dim=1), torch.ones(512), atol=1e-5, rtol=0)
    record = manifest["objects"][ds.object_ids[0]]
    assert float(s.volume) == pytest.approx(record["volume_target"], rel=1e-6)
    assert ds.families[int(s.family_index)] == record["family"]
    assert fraction_inside_mask(s) > 0.99


def test_splits_do_not_share_objects(tiny_dataset):
    ids = {split: set(PreparedDataset(tiny_dataset, split=split).object_ids) for split in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])


def test_roll_augmentation_keeps_labels_consistent(tiny_dataset):
    plain = PreparedDataset(tiny_dataset, split="train", num_points=1024)
    rolled = PreparedDataset(tiny_dataset, split="train", num_points=1024,
                             augmentation=Augmentation(photometric=False, roll_probability=1.0, max_roll_deg=40))
    for item in range(len(plain)):
        a, b = plain[item], rolled[item]
        turn = b.rotation @ a.rotation.T  # Rz(angle)
        assert abs(float(torch.atan2(turn[1, 0], turn[0, 0]))) > 1e-3, "the roll must actually turn the view"
        assert fraction_inside_mask(b) > 0.99
    # control on a box (its outline is not roll-invariant): a 35 degree turn of the mask matches the
    # turned pose and not the old one, so the check above can fail
    box = next(plain[i] for i in range(len(plain)) if plain.families[int(plain[i].family_index)] == "box")
    angle = np.radians(35.0)
    image, mask = roll_image(box.image, box.mask, box.intrinsics, angle)
    turned = box._replace(image=image, mask=mask)
    assert fraction_inside_mask(turned, rotation_z(angle) @ box.rotation, rotation_z(angle) @ box.translation) > 0.99
    assert fraction_inside_mask(turned) < 0.9


def test_roll_image_matches_rotating_the_camera():
    K = torch.tensor([[50.0, 0, 15.5], [0, 50.0, 15.5], [0, 0, 1]])
    image = torch.zeros(1, 32, 32)
    image[0, 8, 20] = 1.0  # one bright pixel at (u=20, v=8)
    turned, _ = roll_image(image, torch.zeros(32, 32), K, np.radians(90.0))
    # a ray through (20, 8) turned by Rz(90 deg): offsets (4.5, -7.5) -> (7.5, 4.5)
    row, col = divmod(int(turned[0].argmax()), 32)
    assert (col, row) == (23, 20)
    point = torch.linalg.solve(K, torch.tensor([20.0, 8.0, 1.0]))
    moved = K @ (rotation_z(np.radians(90.0)) @ point)
    assert torch.allclose(moved[:2] / moved[2], torch.tensor([23.0, 20.0]), atol=1e-4)


def test_photometric_augmentation_is_seeded_and_bounded(tiny_dataset):
    aug = Augmentation()
    ds = PreparedDataset(tiny_dataset, split="train", augmentation=aug, num_points=64)
    a, b = ds[1], ds[1]
    assert torch.equal(a.image, b.image)
    ds.set_epoch(1)
    c = ds[1]
    assert not torch.equal(a.image, c.image) and torch.equal(a.points, c.points)
    assert float(c.image.min()) >= 0.0 and float(c.image.max()) <= 1.0


def test_resizing_scales_the_intrinsics(tiny_dataset):
    ds = PreparedDataset(tiny_dataset, split="train", image_size=32, num_points=1024)
    s = ds[2]
    assert s.image.shape == (3, 32, 32) and s.mask.shape == (32, 32)
    assert fraction_inside_mask(s) > 0.99


def test_random_point_subsets_vary_and_batches_collate(tiny_dataset):
    ds = PreparedDataset(tiny_dataset, split="train", num_points=256, deterministic=False)
    assert not torch.equal(ds[0].points, PreparedDataset(tiny_dataset, split="train", num_points=256)[0].points)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batch = next(iter(loader))
    assert isinstance(batch, Sample) and batch.image.shape == (4, 3, 64, 64) and batch.points.shape == (4, 256, 3)
    assert torch.equal(batch.points[1], ds[1].points)


def test_bad_requests_are_clear(tiny_dataset, tmp_path):
    with pytest.raises(PointstnError, match="has no split 'holdout'"):
        PreparedDataset(tiny_dataset, split="holdout")
    with pytest.raises(PointstnError, match="exceeds the 2048 surface points"):
        PreparedDataset(tiny_dataset, split="train", num_points=4096)
    with pytest.raises(PointstnError, match="manifest.json not found"):
        PreparedDataset(tmp_path, split="train")
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset, copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["complete"] = False
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(PointstnError, match="unfinished"):
        PreparedDataset(copy, split="train")
    manifest["complete"] = True
    manifest["objects"][manifest["splits"]["train"][0]]["file"] = "../../etc/passwd"
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(PointstnError, match="escapes the dataset folder"):
        PreparedDataset(copy, split="train")[0]
