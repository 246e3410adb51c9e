"""Predictor: metric recovery through crops (analytic oracle model), determinism, input kinds, scale
hint, frame consistency, fallback to the coarse cloud."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from pointstn.config import ExperimentConfig
from pointstn.errors import PointstnError
from pointstn.inference import Predictor
from pointstn.inference.camera import default_intrinsics
from pointstn.inference.images import ImageInputError
from tests.inference.conftest import SphereOracle, sphere_image

SIZE_RTOL = 0.02  # oracle: pixel area discretisation and weak perspective
POSITION_TOL_M = 0.01
FLOAT32_RTOL = 1e-5


def oracle_predictor(image_size: int = 64) -> Predictor:
    return Predictor(model=SphereOracle(image_size=image_size), config=ExperimentConfig())


@pytest.mark.parametrize("zoom", ["rig", "fit"])
def test_off_centre_object_in_another_camera_is_recovered_metrically(zoom):
    """A 16 cm sphere 1 m away (the rig distance), far off-axis in a 640x480 camera that is not the
    rig: box crop -> virtual rig camera -> oracle -> back to the real camera gives size and position."""
    rng = np.random.default_rng(0)
    K = np.array([[520.0, 0.0, 331.0], [0.0, 515.0, 236.0], [0.0, 0.0, 1.0]])
    for _ in range(3):
        direction = np.array([rng.uniform(0.15, 0.3) * rng.choice([-1, 1]), rng.uniform(-0.2, 0.2), 1.0])
        centre = direction / np.linalg.norm(direction)  # distance 1.0 m
        radius = rng.uniform(0.05, 0.1)
        image = sphere_image(K=K, size_hw=(480, 640), centre=centre, radius=radius)
        dark = image[..., 0] < 128
        rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
        box = (cols[0] - 2.0, rows[0] - 2.0, cols[-1] + 3.0, rows[-1] + 3.0)
        [result] = oracle_predictor().predict(image, boxes=box, intrinsics=K, zoom=zoom, fill=0.6)
        assert result.pose.scale == pytest.approx(2 * radius, rel=SIZE_RTOL)
        assert np.abs(result.pose.translation - centre).max() < POSITION_TOL_M
        assert result.geometry.longest_edge_m == pytest.approx(2 * radius, rel=SIZE_RTOL)
        if zoom == "fit":  # the compensation was needed: uncompensated sizes would be off by the zoom
            assert abs(result.view.zoom - 1.0) > 0.3


def test_no_box_uses_the_whole_rig_view():
    K = default_intrinsics(height=256, width=256, fov_y_deg=30.0)
    centre = np.array([0.0, 0.0, 1.0])
    image = sphere_image(K=K, size_hw=(256, 256), centre=centre, radius=0.08)
    [result] = oracle_predictor().predict(image)
    assert result.view.zoom == pytest.approx(1.0) and np.array_equal(result.view.rotation, np.eye(3))
    assert result.pose.scale == pytest.approx(0.16, rel=SIZE_RTOL)
    assert np.abs(result.pose.translation - centre).max() < POSITION_TOL_M


def test_mask_locates_the_crop_like_its_box():
    K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
    centre = np.array([0.3, -0.1, 1.0])
    centre /= np.linalg.norm(centre)
    image = sphere_image(K=K, size_hw=(480, 640), centre=centre, radius=0.07)
    mask = image[..., 0] < 128
    [by_mask] = oracle_predictor().predict(image, masks=mask, intrinsics=K)
    assert by_mask.pose.scale == pytest.approx(0.14, rel=SIZE_RTOL)
    assert np.abs(by_mask.pose.translation - centre).max() < POSITION_TOL_M


def test_scale_hint_rescales_every_metric_output(small_model):
    model, config = small_model
    predictor = Predictor(model=model, config=config)
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    [plain] = predictor.predict(image, num_points=512)
    [hinted] = predictor.predict(image, num_points=512, scale_hint=0.25)
    factor = 0.25 / plain.geometry.longest_edge_m
    assert hinted.scale_source == "scale_hint" and plain.scale_source == "rig"
    assert hinted.scale_factor == pytest.approx(factor, rel=1e-12)
    assert hinted.geometry.longest_edge_m == pytest.approx(0.25, rel=FLOAT32_RTOL)
    assert np.allclose(hinted.points_camera, factor * plain.points_camera.astype(np.float64), rtol=FLOAT32_RTOL, atol=1e-7)
    assert hinted.pose.scale == pytest.approx(factor * plain.pose.scale, rel=1e-12)
    assert np.allclose(hinted.pose.translation, factor * plain.pose.translation, rtol=1e-12)
    assert np.array_equal(hinted.points_canonical, plain.points_canonical)
    assert hinted.geometry.convex_hull_volume_m3 == pytest.approx(factor**3 * plain.geometry.convex_hull_volume_m3,
                                                                  rel=1e-4)
    assert np.allclose(hinted.geometry.obb_extents_m, factor * plain.geometry.obb_extents_m, rtol=1e-4)
    assert hinted.geometry.encloses_volume == plain.geometry.encloses_volume
    if plain.geometry.encloses_volume:
        assert hinted.geometry.solid_volume_m3 == pytest.approx(factor**3 * plain.geometry.solid_volume_m3, rel=1e-4)


@pytest.mark.parametrize("hint", [0.0, -0.2, float("nan"), float("inf"), True, "0.2"])
def test_bad_scale_hint_is_refused_before_any_work(hint):
    predictor = oracle_predictor()
    with pytest.raises(PointstnError, match="scale hint must be a positive number"):
        predictor.predict(np.zeros((64, 64, 3), dtype=np.uint8), scale_hint=hint)


def test_frames_are_consistent_and_results_frozen(small_model):
    model, config = small_model
    [result] = Predictor(model=model, config=config).predict(np.full((80, 80, 3), 90, np.uint8), num_points=300)
    assert result.cloud_source == "fine" and result.points_camera.shape == (300, 3)
    assert result.points_camera.dtype == np.float32 and result.points_canonical.dtype == np.float32
    assert np.allclose(result.points_camera, result.pose.apply(result.points_canonical), atol=1e-6)
    assert np.allclose(result.points_canonical_m, result.pose.scale * result.points_canonical.astype(np.float64),
                       atol=1e-7)
    assert np.allclose(result.pose.matrix()[:3, :3], result.pose.scale * result.pose.rotation)
    assert np.allclose(result.pose.rotation.T @ result.pose.rotation, np.eye(3), atol=1e-6)
    assert result.units["points_camera"] == "m" and result.units["solid_volume"] == "m^3"
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.name = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.points_camera[0, 0] = 1.0
    timings = result.timings
    assert timings.batch_size == 1 and min(timings.load_s, timings.model_s, timings.geometry_s) > 0


def test_same_input_same_result_for_every_input_kind(small_model, tmp_path):
    model, config = small_model
    predictor = Predictor(model=model, config=config)
    rgb = np.random.default_rng(2).integers(0, 256, (72, 96, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    kinds = [str(tmp_path / "x.png"), tmp_path / "x.png", Image.fromarray(rgb), rgb, rgb / 255.0,
             torch.from_numpy(rgb).permute(2, 0, 1), torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0]
    results = [predictor.predict(kind, num_points=256)[0] for kind in kinds]
    results.append(predictor.predict(kinds[0], num_points=256)[0])  # the same input twice
    for other in results[1:]:
        assert np.array_equal(other.points_camera, results[0].points_camera)
        assert np.array_equal(other.pose.rotation, results[0].pose.rotation)
        assert other.geometry.convex_hull_volume_m3 == results[0].geometry.convex_hull_volume_m3


def test_batches_match_single_predictions(small_model):
    model, config = small_model
    predictor = Predictor(model=model, config=config)
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.random((3, 3, 64, 64), dtype=np.float32))
    batched = predictor.predict(images, num_points=200, batch_size=3)
    singles = [predictor.predict(images[i], num_points=200)[0] for i in range(3)]
    assert [r.name for r in batched] == ["image[0]", "image[1]", "image[2]"]
    for b, s in zip(batched, singles):
        assert b.timings.batch_size == 3 and s.timings.batch_size == 1
        assert np.allclose(b.points_camera, s.points_camera, atol=1e-4)


def test_coarse_fallback_when_the_decoder_keeps_almost_nothing():
    oracle = SphereOracle(image_size=64)
    forward = oracle.forward

    def few_points(images):
        out = forward(images)
        return dataclasses.replace(out, lengths=torch.full_like(out.lengths, 5))

    oracle.forward = few_points
    predictor = Predictor(model=oracle, config=ExperimentConfig())
    image = sphere_image(K=default_intrinsics(height=64, width=64, fov_y_deg=30.0), size_hw=(64, 64),
                         centre=np.array([0.0, 0.0, 1.0]), radius=0.1)
    [result] = predictor.predict(image, num_points=100)
    assert result.cloud_source == "coarse" and result.points_camera.shape == (100, 3)


def test_per_input_arguments_must_match_the_batch():
    predictor = oracle_predictor()
    images = [np.zeros((64, 64, 3), np.uint8)] * 3
    with pytest.raises(PointstnError, match="boxes"):
        predictor.predict(images, boxes=[(0, 0, 10, 10), (0, 0, 10, 10)])
    with pytest.raises(ImageInputError, match="image\\[1\\].*box"):
        predictor.predict(images, boxes=[None, (0, 0, 100, 10), None])
    with pytest.raises(ImageInputError, match="mask is empty"):
        predictor.predict(images[0], masks=np.zeros((64, 64), bool))


@pytest.mark.parametrize("how", ["fps", "random"])
def test_resampling_is_deterministic_batch_independent_and_a_subset(small_model, how):
    model, config = small_model
    predictor = Predictor(model=model, config=config)
    # 8-bit values: float inputs are quantized to 8 bits on loading (pointstn.inference.images)
    images = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (2, 3, 64, 64)).astype(np.float32) / 255)
    with torch.no_grad():
        raw = model(images[1:])
    full = raw.points[0, : int(raw.lengths[0])].double().numpy()
    assert full.shape[0] > 300  # so the cloud really is cut
    batched = predictor.predict(images, num_points=300, resample=how)[1]
    single = predictor.predict(images[1], num_points=300, resample=how)[0]
    assert batched.resampling == how and batched.points_canonical.shape == (300, 3)
    # the model itself differs by ~1e-4 between batch sizes (batched float32 kernels), not the selection
    assert np.allclose(batched.points_canonical, single.points_canonical, atol=1e-3)
    # every output point is one of the model's points (the same batch of one)
    distance = np.abs(single.points_canonical[:, None, :].astype(np.float64) - full[None]).max(axis=-1).min(axis=1)
    assert distance.max() < 1e-6
    assert len(np.unique(single.points_canonical, axis=0)) == 300
    whole = predictor.predict(images[1], num_points=full.shape[0] + 10, resample=how)[0]
    assert whole.resampling == "none" and np.allclose(whole.points_canonical, full, atol=1e-6)
    with pytest.raises(PointstnError, match="unknown resampling"):
        predictor.predict(images[1], num_points=300, resample="grid")
