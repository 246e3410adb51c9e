"""The equivalent camera: exact re-centring homography, identity on rig images, anti-aliased reduction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pointstn.errors import PointstnError
from pointstn.inference.camera import check_intrinsics, default_intrinsics, look_rotation, plan_view, render_view

PIXEL_TOL = 1e-6  # float64 pixel coordinates
GRAY_TOL = 1.5 / 255  # one 8-bit step plus float32 rounding


def test_look_rotation_is_proper_and_points_at_direction():
    rng = np.random.default_rng(0)
    assert np.allclose(look_rotation(np.array([0.0, 0.0, 2.0])), np.eye(3))
    for _ in range(20):
        direction = np.array([*rng.uniform(-1, 1, 2), rng.uniform(0.3, 1)])
        R = look_rotation(direction)
        assert np.allclose(R.T @ R, np.eye(3), atol=1e-12) and math.isclose(np.linalg.det(R), 1.0, abs_tol=1e-12)
        assert np.allclose(R[:, 2], direction / np.linalg.norm(direction), atol=1e-12)
        assert abs(R[1, 0]) < 1e-12  # no roll: the virtual x axis has no real-y component


def test_source_pixels_match_reference_projection():
    """A 3D point seen by the virtual camera at pixel p' is seen by the real camera at source_pixels[p']."""
    rng = np.random.default_rng(1)
    K = np.array([[610.0, 0.0, 300.5], [0.0, 590.0, 250.25], [0.0, 0.0, 1.0]])
    view = plan_view(source_size=(480, 640), intrinsics=K, box=(420.0, 60.0, 520.0, 170.0), size=64,
                     fov_y_deg=30.0, zoom="fit", fill=0.6)
    uv, front = view.source_pixels()
    assert front.all()
    K_virtual = np.array([[view.focal_px, 0, 31.5], [0, view.focal_px, 31.5], [0, 0, 1.0]])
    for _ in range(50):
        X_virtual = np.array([*rng.uniform(-0.1, 0.1, 2), rng.uniform(0.8, 1.2)])
        p_virtual = K_virtual @ X_virtual
        p_virtual = p_virtual[:2] / p_virtual[2]
        X_real = view.rotation @ X_virtual
        p_real = K @ X_real
        p_real = p_real[:2] / p_real[2]
        # source_pixels is sampled on the integer grid: interpolate the (smooth) map bilinearly
        iu, iv = int(np.floor(p_virtual[0])), int(np.floor(p_virtual[1]))
        if not (0 <= iu < 63 and 0 <= iv < 63):
            continue
        fu, fv = p_virtual[0] - iu, p_virtual[1] - iv
        exact_at_nodes = []
        for du, dv in ((0, 0), (1, 0), (0, 1), (1, 1)):
            ray = view.rotation @ np.linalg.inv(K_virtual) @ np.array([iu + du, iv + dv, 1.0])
            q = K @ ray
            exact_at_nodes.append(q[:2] / q[2])
            assert np.allclose(uv[iv + dv, iu + du], q[:2] / q[2], atol=PIXEL_TOL)
        # the projection of the same 3D point agrees to the bilinear interpolation error of the map
        interp = ((1 - fu) * (1 - fv) * exact_at_nodes[0] + fu * (1 - fv) * exact_at_nodes[1]
                  + (1 - fu) * fv * exact_at_nodes[2] + fu * fv * exact_at_nodes[3])
        assert np.allclose(interp, p_real, atol=0.05)
    # the box centre is the input's centre
    centre = uv[31:33, 31:33].mean(axis=(0, 1))
    assert np.allclose(centre, [469.5, 114.5], atol=0.05)


@pytest.mark.parametrize("size", [64, 128])
def test_rig_image_without_box_is_reproduced(size):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    view = plan_view(source_size=(size, size), intrinsics=default_intrinsics(height=size, width=size, fov_y_deg=30.0),
                     box=None, size=size, fov_y_deg=30.0)
    assert view.zoom == pytest.approx(1.0) and np.array_equal(view.rotation, np.eye(3))
    out = render_view(image, view)
    assert out.shape == (size, size, 3) and out.dtype == np.float32
    assert np.abs(out - image / 255.0).max() < GRAY_TOL


def test_larger_rig_image_is_reduced_without_aliasing_and_maps_exactly():
    """A 4x rig image: the input equals the 4x4 box average (exact reduce + coordinate mapping); a
    pixel-level checkerboard becomes uniform grey instead of aliasing."""
    rng = np.random.default_rng(3)
    small = 64
    big = rng.integers(0, 256, (4 * small, 4 * small, 3), dtype=np.uint8)
    view = plan_view(source_size=big.shape[:2], intrinsics=default_intrinsics(height=4 * small, width=4 * small,
                                                                           fov_y_deg=30.0),
                     box=None, size=small, fov_y_deg=30.0)
    out = render_view(big, view)
    reference = big.reshape(small, 4, small, 4, 3).astype(np.float64).mean(axis=(1, 3)) / 255.0
    assert np.abs(out - reference).max() < 1.0 / 255 + 1e-3  # Pillow rounds the averages to 8 bits
    checker = (np.indices((4 * small, 4 * small)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = render_view(np.repeat(checker[..., None], 3, axis=2), view)
    assert abs(out.mean() - 0.5) < 0.01 and out.std() < 0.01


def test_outside_the_image_is_white():
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    K = default_intrinsics(height=100, width=100, fov_y_deg=30.0)
    view = plan_view(source_size=(100, 100), intrinsics=K, box=(0.0, 0.0, 10.0, 10.0), size=32, fov_y_deg=30.0)
    out = render_view(image, view)
    assert out[0, 0].min() == pytest.approx(1.0)  # up-left of the corner box: outside the image
    assert out[-1, -1].max() == pytest.approx(0.0)  # towards the image centre: black


def test_fit_zoom_makes_box_fill_the_input():
    K = default_intrinsics(height=400, width=400, fov_y_deg=30.0)
    view = plan_view(source_size=(400, 400), intrinsics=K, box=(150.0, 150.0, 250.0, 250.0), size=64,
                     fov_y_deg=30.0, zoom="fit", fill=0.5)
    # a centred 100 px box in a 400 px rig image covers 1/4 of the side: zoom 2 to cover 1/2
    assert view.zoom == pytest.approx(2.0, rel=1e-9)
    image = np.full((400, 400, 3), 255, dtype=np.uint8)
    image[150:250, 150:250] = 0
    out = render_view(image, view)[..., 0]
    dark_columns = np.flatnonzero(out[32] < 0.5)
    assert dark_columns[0] in (15, 16) and dark_columns[-1] in (47, 48)


@pytest.mark.parametrize("bad", [np.eye(2), [[1, 0, 0], [0, -1, 0], [0, 0, 1]], [[1, 0.1, 0], [0, 1, 0], [0, 0, 1]],
                                 [[1, 0, 0], [0, 1, 0], [0, 0, 2]], [[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]]])
def test_bad_intrinsics_are_refused(bad):
    with pytest.raises(PointstnError, match="intrinsics"):
        check_intrinsics(bad)


def test_unknown_zoom_and_bad_fill():
    K = default_intrinsics(height=64, width=64, fov_y_deg=30.0)
    with pytest.raises(PointstnError, match="zoom"):
        plan_view(source_size=(64, 64), intrinsics=K, box=None, size=64, fov_y_deg=30.0, zoom="tight")
    with pytest.raises(PointstnError, match="fill"):
        plan_view(source_size=(64, 64), intrinsics=K, box=None, size=64, fov_y_deg=30.0, fill=0.0)


def test_non_square_images_use_a_centred_square_of_side_h():
    """Default intrinsics: landscape -> the centred H x H square; portrait -> padded with white."""
    rng = np.random.default_rng(4)
    landscape = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    view = plan_view(source_size=(64, 128), intrinsics=default_intrinsics(height=64, width=128, fov_y_deg=30.0),
                     box=None, size=64, fov_y_deg=30.0)
    assert np.abs(render_view(landscape, view) - landscape[:, 32:96] / 255.0).max() < GRAY_TOL
    portrait = rng.integers(0, 200, (64, 32, 3), dtype=np.uint8)
    view = plan_view(source_size=(64, 32), intrinsics=default_intrinsics(height=64, width=32, fov_y_deg=30.0),
                     box=None, size=64, fov_y_deg=30.0)
    out = render_view(portrait, view)
    assert np.abs(out[:, 16:48] - portrait / 255.0).max() < GRAY_TOL
    assert out[:, :15].min() == pytest.approx(1.0) and out[:, 49:].min() == pytest.approx(1.0)
