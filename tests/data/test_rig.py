"""Tests for the camera rig: intrinsics, pose construction, sampling, viewpoint bins, manifest I/O."""

import json
import math

import numpy as np
import pytest

from pointstn.data.render.rig import VIEWPOINT_BINS, Rig, project
from pointstn.errors import PointstnError

F64_TOL = 1e-10


def reference_look_at(*, azimuth_deg: float, elevation_deg: float, distance_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Textbook look-at (camera centre, target at origin, world up +z), OpenCV axes; not valid at the poles."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    centre = distance_m * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    forward = -centre / np.linalg.norm(centre)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return rotation, -rotation @ centre


def test_intrinsics_put_the_field_of_view_edges_on_the_image_edges():
    rig = Rig(
        image_size=96,
        fov_y_deg=40.0,
        distance_range_m=(1.5, 1.5),
        max_object_radius_m=0.2,
    )
    K = rig.intrinsics()
    assert K.shape == (3, 3)
    half = math.tan(math.radians(20.0))
    edges = project(np.array([[-half, -half, 1.0], [half, half, 1.0]]), K)
    # OpenCV: pixel centres at integers, so the outer pixel edges are at -0.5 and size - 0.5.
    np.testing.assert_allclose(edges, [[-0.5, -0.5], [95.5, 95.5]], atol=F64_TOL)


@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_poses_are_proper_rotations_matching_a_textbook_look_at(seed):
    rig = Rig(roll_probability=0.0)
    rng = np.random.default_rng(seed)
    for _ in range(200):
        view = rig.sample_view(rng)
        R = view.rotation
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=F64_TOL)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=F64_TOL)
        if abs(view.elevation_deg) < 89.0:
            ref_R, ref_t = reference_look_at(
                azimuth_deg=view.azimuth_deg,
                elevation_deg=view.elevation_deg,
                distance_m=view.distance_m,
            )
            np.testing.assert_allclose(R, ref_R, atol=1e-9)
            np.testing.assert_allclose(view.translation, ref_t, atol=1e-9)
        # The object origin is at distance d straight ahead: it projects to the principal point.
        np.testing.assert_allclose(project(view.to_camera(np.zeros((1, 3))), rig.intrinsics())[0], [63.5, 63.5])


def test_object_up_points_up_in_the_image_and_roll_turns_the_image_clockwise():
    rig = Rig()
    K = rig.intrinsics()
    point = np.array([[0.03, -0.05, 0.08]])
    for elevation in (-40.0, 0.0, 45.0):
        upright = rig.view(azimuth_deg=70.0, elevation_deg=elevation)
        u, v = project(upright.to_camera(np.array([[0.0, 0.0, 0.1]])), K)[0]
        assert u == pytest.approx(63.5, abs=1e-9) and v < 63.5 - 5  # +z of the object is up in the image
        base = project(upright.to_camera(point), K)[0] - 63.5
        for roll in (-30.0, 20.0):
            rolled = project(
                rig.view(azimuth_deg=70.0, elevation_deg=elevation, roll_deg=roll).to_camera(point),
                K,
            )[0]
            c, s = math.cos(math.radians(roll)), math.sin(math.radians(roll))
            # x right, y down: rotating (x, y) by +roll is clockwise on screen.
            expected = np.array([c * base[0] - s * base[1], s * base[0] + c * base[1]]) + 63.5
            np.testing.assert_allclose(rolled, expected, atol=1e-9)


def test_pose_is_continuous_through_top_down():
    rig = Rig(elevation_range_deg=(-90.0, 90.0), max_object_radius_m=0.25)
    at_pole = rig.view(azimuth_deg=33.0, elevation_deg=90.0).rotation
    near_pole = rig.view(azimuth_deg=33.0, elevation_deg=90.0 - 1e-6).rotation
    np.testing.assert_allclose(at_pole, near_pole, atol=1e-7)
    np.testing.assert_allclose(at_pole[2], [0.0, 0.0, -1.0], atol=F64_TOL)  # looking straight down


def test_projected_radius_matches_a_densely_sampled_sphere_silhouette():
    rig = Rig()
    radius, distance = 0.2, 0.9
    rng = np.random.default_rng(3)
    directions = rng.normal(size=(200_000, 3))
    points = radius * directions / np.linalg.norm(directions, axis=1, keepdims=True) + [
        0.0,
        0.0,
        distance,
    ]
    pixels = project(points, rig.intrinsics()) - 63.5
    brute = np.linalg.norm(pixels, axis=1).max()
    expected = rig.projected_radius_px(radius, distance)
    assert brute <= expected + 1e-9
    assert brute == pytest.approx(expected, rel=1e-3)


def test_default_rig_keeps_the_largest_object_inside_and_documents_sizes():
    rig = Rig()
    assert rig.projected_radius_px(rig.max_object_radius_m, rig.distance_range_m[0]) <= rig.image_size / 2
    # Apparent sizes quoted in the rig docstring (edge seen side-on at 1 m).
    assert 0.35 * rig.focal_px == pytest.approx(84, abs=0.5)
    assert 0.02 * rig.focal_px == pytest.approx(4.8, abs=0.05)
    with pytest.raises(ValueError, match="px"):
        Rig(distance_range_m=(0.6, 0.6))


def test_sampling_respects_ranges_and_roll_probability():
    rig = Rig(distance_range_m=(0.95, 1.05), max_object_radius_m=0.2)
    rng = np.random.default_rng(7)
    views = [rig.sample_view(rng) for _ in range(4000)]
    az = np.array([v.azimuth_deg for v in views])
    el = np.array([v.elevation_deg for v in views])
    roll = np.array([v.roll_deg for v in views])
    dist = np.array([v.distance_m for v in views])
    assert az.min() >= 0 and az.max() < 360 and az.max() - az.min() > 350
    assert el.min() >= -50 and el.max() <= 88 and el.min() < -49 and el.max() > 87
    assert np.all((roll == 0) | ((roll >= -45) & (roll <= 45)))
    assert np.mean(roll != 0) == pytest.approx(0.3, abs=0.03)  # binomial sd ~0.007
    assert dist.min() >= 0.95 and dist.max() <= 1.05
    np.testing.assert_allclose([np.linalg.norm(v.translation) for v in views], dist, atol=F64_TOL)


def test_same_seed_gives_the_same_views():
    rig = Rig()
    first = [rig.sample_view(np.random.default_rng(11)).matrix() for _ in range(3)]
    again = [rig.sample_view(np.random.default_rng(11)).matrix() for _ in range(3)]
    other = rig.sample_view(np.random.default_rng(12)).matrix()
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], other)


def test_viewpoint_bins_thresholds_and_precedence():
    rig = Rig()
    cases = {
        (-10.0, 0.0): "canonical",
        (60.0, 15.0): "canonical",
        (-10.01, 0.0): "below",
        (60.01, 0.0): "top",
        (30.0, 15.01): "roll",
        (30.0, -15.01): "roll",
        (-20.0, 40.0): "below",  # elevation bins take precedence over roll
        (80.0, -40.0): "top",
    }
    for (elevation, roll), expected in cases.items():
        assert rig.viewpoint_bin(rig.view(azimuth_deg=10.0, elevation_deg=elevation, roll_deg=roll)) == expected


def test_viewpoint_bins_cover_the_default_ranges_in_the_expected_proportions():
    rig = Rig()
    rng = np.random.default_rng(5)
    bins = [rig.viewpoint_bin(rig.sample_view(rng)) for _ in range(6000)]
    assert set(bins) == set(VIEWPOINT_BINS)
    span = 88.0 - -50.0
    moderate = 70.0 / span
    expected = {
        "below": 40.0 / span,
        "top": 28.0 / span,
        "roll": moderate * 0.3 * (60.0 / 90.0),  # |roll| > 15 of a uniform roll in [-45, 45]
        "canonical": moderate * (0.7 + 0.3 * 30.0 / 90.0),
    }
    for name, fraction in expected.items():
        assert bins.count(name) / len(bins) == pytest.approx(fraction, abs=0.025), name


def test_rig_round_trips_through_a_json_manifest():
    rig = Rig(image_size=64, fov_y_deg=45.0, distance_range_m=(0.7, 0.8), roll_probability=0.5)
    restored = Rig.from_dict(json.loads(json.dumps(rig.to_dict())))
    assert restored == rig
    np.testing.assert_array_equal(restored.intrinsics(), rig.intrinsics())


def test_rig_from_dict_names_unknown_keys_and_invalid_values():
    with pytest.raises(PointstnError, match="fov_deg"):
        Rig.from_dict({"fov_deg": 30.0})
    with pytest.raises(PointstnError, match="elevation_range_deg"):
        Rig.from_dict({"elevation_range_deg": [10.0, -10.0]})
    with pytest.raises(PointstnError, match="90"):
        Rig.from_dict({"elevation_range_deg": [-95.0, 10.0]})
