"""Tests for pointstn.models.sampler3d: the projection convention against the rig, and the sampler
against a naive per-point float64 loop (values and gradients) and gradcheck."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pointstn.data.render.rig import Rig, project
from pointstn.models.backbone import ResNetBackbone
from pointstn.models.localization import LocalizationNet, nominal_pose_from_rig
from pointstn.models.sampler3d import (
    GEOMETRY_CHANNELS,
    FeatureSampler3D,
    PointFeatures,
    bilinear_packed,
    project_weak_perspective,
    split_channels,
)
from pointstn.models.types import SimilarityTransform
from pointstn.ops.rotation import rotation_6d_to_matrix

ATOL = {torch.float32: 1e-5, torch.float64: 1e-12}
RIG = Rig()
FOCAL = 1.0 / math.tan(math.radians(RIG.fov_y_deg) / 2)  # 3.732 for the default rig
HALF_DIAGONAL = math.sqrt(3) / 2  # farthest point of the normalized cube [-0.5, 0.5]^3 from its centre


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def to_normalized(pixels: np.ndarray, size: int) -> np.ndarray:
    """OpenCV pixel coordinates (centres at integers) -> grid_sample's align_corners=False coordinates."""
    return (2.0 * pixels + 1.0) / size - 1.0


def rig_transform(*, scale: float, view=None, dtype=torch.float64) -> SimilarityTransform:
    view = view if view is not None else RIG.view(azimuth_deg=0.0, elevation_deg=20.0)
    return SimilarityTransform(
        torch.as_tensor(view.rotation, dtype=dtype)[None],
        torch.tensor([scale], dtype=dtype),
        torch.as_tensor(view.translation, dtype=dtype)[None],
    )


# ---------------------------------------------------------------------------- projection convention


def test_focal_is_the_rig_focal_in_normalized_units():
    K = RIG.intrinsics()
    assert FOCAL == pytest.approx(2 * K[0, 0] / RIG.image_size, abs=1e-12) and FOCAL == pytest.approx(
        3.7320508, abs=1e-7
    )


def test_object_centre_lands_on_the_principal_point():
    K = RIG.intrinsics()
    rng = np.random.default_rng(0)
    for view in [RIG.view(azimuth_deg=0.0, elevation_deg=20.0)] + [RIG.sample_view(rng) for _ in range(10)]:
        T = rig_transform(scale=0.15, view=view)
        centre_cam = T.apply(torch.zeros(1, 1, 3, dtype=torch.float64))
        uv = project_weak_perspective(centre_cam, T.translation, FOCAL)
        assert torch.equal(uv, torch.zeros(1, 1, 2, dtype=torch.float64))
        pixel = project(centre_cam[0].numpy(), K)
        np.testing.assert_array_equal(pixel, [[(RIG.image_size - 1) / 2] * 2])
        np.testing.assert_array_equal(to_normalized(pixel, RIG.image_size), [[0.0, 0.0]])


@pytest.mark.parametrize("scale", [0.15, 0.5])
def test_weak_perspective_matches_pinhole_K_up_to_the_analytic_error(scale):
    """Pinhole with K in normalized units is focal X / Z; weak perspective is focal X / t_z.

    The difference is exactly focal X (t_z - Z) / (Z t_z). Every point of the normalized cube lies
    within r = s sqrt(3) / 2 of the object centre, which the rig puts on the optical axis (t = (0, 0, d)),
    so X^2 + (Z - t_z)^2 <= r^2, hence |X| |Z - t_z| <= r^2 / 2 and Z >= t_z - r:

        |error| <= focal r^2 / (2 t_z (t_z - r))                         (whole object)
        |error| <= focal eps r / (t_z (t_z - r))   for |X| <= eps         (near the optical axis)

    For the 0.15 m nominal size that is 0.036 normalized = 2.3 px at 128 px over the whole object and
    0.36 px within 1 cm of the axis.
    """
    K = RIG.intrinsics()
    size = RIG.image_size
    rng = np.random.default_rng(1)
    r = scale * HALF_DIAGONAL
    worst = 0.0
    for _ in range(20):
        view = RIG.sample_view(rng)
        t_z = view.translation[2]
        points = torch.rand(1, 400, 3, generator=gen(2), dtype=torch.float64) - 0.5
        corners = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
        points = torch.cat([points, corners.double()[None]], dim=1)
        T = rig_transform(scale=scale, view=view)
        x_cam = T.apply(points)
        weak = project_weak_perspective(x_cam, T.translation, FOCAL)[0].numpy()
        perspective = to_normalized(project(x_cam[0].numpy(), K), size)
        diff = perspective - weak
        X, Z = x_cam[0, :, :2].numpy(), x_cam[0, :, 2:].numpy()
        np.testing.assert_allclose(diff, FOCAL * X * (t_z - Z) / (Z * t_z), rtol=0, atol=1e-12)
        bound = FOCAL * r**2 / (2 * t_z * (t_z - r))
        assert np.abs(diff).max() <= bound
        worst = max(worst, np.abs(diff).max() / bound)
    assert worst > 0.5  # the bound is not vacuous: some point comes within a factor 2 of it

    eps = 0.01  # points within 1 cm of the optical axis, anywhere in depth across the object
    x_cam = torch.empty(1, 500, 3, dtype=torch.float64)
    x_cam[..., :2] = (torch.rand(1, 500, 2, generator=gen(3), dtype=torch.float64) * 2 - 1) * eps
    x_cam[..., 2] = 1.0 + (torch.rand(1, 500, generator=gen(4), dtype=torch.float64) * 2 - 1) * r
    translation = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    weak = project_weak_perspective(x_cam, translation, FOCAL)[0].numpy()
    perspective = to_normalized(project(x_cam[0].numpy(), K), size)
    near_bound = FOCAL * eps * r / (1.0 * (1.0 - r))
    assert np.abs(perspective - weak).max() <= near_bound
    if scale == 0.15:
        assert near_bound * size / 2 < 0.4  # pixels


def test_sampling_reads_the_pixel_that_K_projects_to():
    """A point at the centre's depth (weak == pinhole) that K maps to pixel (u, v) samples exactly that pixel."""
    size, K = RIG.image_size, RIG.intrinsics()
    f_px, c = K[0, 0], K[0, 2]
    image = torch.arange(size * size, dtype=torch.float64).view(1, 1, size, size)  # value = row * size + col
    sampler = FeatureSampler3D(in_channels=(1,), out_channels=1 + GEOMETRY_CHANNELS, focal=FOCAL).double()
    with torch.no_grad():
        sampler.reduce[0].weight.fill_(1.0)
        sampler.reduce[0].bias.zero_()
    pixels = np.array([[0, 0], [127, 127], [10, 100], [100, 10], [64, 63]], dtype=np.float64)
    T = rig_transform(scale=0.15)
    t_z = T.translation[0, 2].item()
    x_cam = np.column_stack([(pixels - c) * t_z / f_px, np.full(len(pixels), t_z)])
    np.testing.assert_allclose(project(x_cam, K), pixels, atol=1e-12)
    points = T.inverse_apply(torch.from_numpy(x_cam)[None])
    out = sampler(points, T, [image])
    expected = torch.from_numpy(pixels[:, 1] * size + pixels[:, 0])[None]
    torch.testing.assert_close(out.features[..., 0], expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(out.uv[0], torch.from_numpy(to_normalized(pixels, size)), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------- the naive reference


def reference_features(
    sampler: FeatureSampler3D, points: torch.Tensor, T: SimilarityTransform, maps: list[torch.Tensor]
) -> torch.Tensor:
    """(B, N, out_channels) by an explicit loop: one point, one level, four neighbours at a time."""
    batch, count, _ = points.shape
    rows = []
    for b in range(batch):
        for n in range(count):
            x_cam = T.scale[b] * (T.rotation[b] @ points[b, n]) + T.translation[b]
            t_z = T.translation[b, 2]
            u, v = sampler.focal * x_cam[0] / t_z, sampler.focal * x_cam[1] / t_z
            inside = float(abs(u.item()) <= 1 and abs(v.item()) <= 1)
            parts = []
            for conv, feature_map in zip(sampler.reduce, maps):
                weight, bias = conv.weight[:, :, 0, 0], conv.bias
                height, width = feature_map.shape[2:]
                px, py = ((u + 1) * width - 1) / 2, ((v + 1) * height - 1) / 2  # pixel-centre coordinates
                x0, y0 = math.floor(px.item()), math.floor(py.item())
                value = torch.zeros(weight.shape[0], dtype=points.dtype)
                for xi in (x0, x0 + 1):
                    for yi in (y0, y0 + 1):
                        if 0 <= xi < width and 0 <= yi < height:
                            w = (1 - (px - xi).abs()) * (1 - (py - yi).abs())
                            value = value + w * (weight @ feature_map[b, :, yi, xi] + bias)
                parts.append(value * inside)
            rel_depth = (x_cam[2] - t_z) / T.scale[b]
            parts += [rel_depth[None], torch.tensor([inside], dtype=points.dtype), points[b, n]]
            rows.append(torch.cat(parts))
    return torch.stack(rows).view(batch, count, -1)


def random_problem(seed: int, *, dtype: torch.dtype = torch.float64, count: int = 6):
    """Small maps, a random transform, points inside and outside the image (some near the border)."""
    g = gen(seed)
    maps = [torch.randn(2, 3, 6, 5, generator=g, dtype=dtype), torch.randn(2, 4, 3, 3, generator=g, dtype=dtype)]
    d6 = torch.randn(2, 6, generator=g, dtype=dtype)
    log_scale = math.log(0.25) + 0.2 * torch.randn(2, generator=g, dtype=dtype)
    translation = torch.tensor([[0.02, -0.03, 1.0], [-0.05, 0.01, 1.2]], dtype=dtype)
    points = torch.rand(2, count, 3, generator=g, dtype=dtype) - 0.5
    points[:, 0] = torch.tensor([2.0, 1.5, 0.0], dtype=dtype)  # projects outside the image
    # inside the image, within half a cell of its corner: some bilinear neighbours fall outside the maps
    with torch.no_grad():
        corner = torch.tensor([0.95, -0.93], dtype=dtype) * translation[:, 2:] / FOCAL
        x_cam = torch.cat([corner, translation[:, 2:]], dim=-1)[:, None]
        points[:, 1] = make_transform(d6, log_scale, translation).inverse_apply(x_cam)[:, 0]
    return maps, points, d6, log_scale, translation


def make_transform(d6: torch.Tensor, log_scale: torch.Tensor, translation: torch.Tensor) -> SimilarityTransform:
    return SimilarityTransform(rotation_6d_to_matrix(d6), torch.exp(log_scale), translation)


def make_sampler(seed: int, *, out_channels: int = 12) -> FeatureSampler3D:
    torch.manual_seed(seed)
    return FeatureSampler3D(in_channels=(3, 4), out_channels=out_channels, focal=FOCAL).double()


def differentiable_problem(sampler_seed: int, problem_seed: int):
    """(sampler, maps, points, d6, log_scale, translation, leaves): a random problem whose inputs require grad."""
    sampler = make_sampler(sampler_seed)
    maps, points, d6, log_scale, translation = random_problem(problem_seed)
    leaves = [*maps, points, d6, log_scale, translation]
    for x in leaves:
        x.requires_grad_(True)
    return sampler, maps, points, d6, log_scale, translation, leaves


def test_sampler_matches_naive_loop_values_and_gradients():
    sampler, maps, points, d6, log_scale, translation, leaves = differentiable_problem(0, 1)
    T = make_transform(d6, log_scale, translation)
    out = sampler(points, T, maps)
    expected = reference_features(sampler, points, T, maps)
    torch.testing.assert_close(out.features, expected, rtol=0, atol=1e-12)
    valid = out.features[..., -4]
    assert valid[:, 0].sum() == 0 and valid[:, 1:].sum() == 10  # the chosen outside point, the rest inside
    torch.testing.assert_close(out.uv[:, 1], torch.tensor([[0.95, -0.93]] * 2, dtype=torch.float64), rtol=0, atol=1e-12)

    weights = torch.randn(out.features.shape, generator=gen(2), dtype=torch.float64)
    params = list(sampler.parameters())
    grads = torch.autograd.grad((out.features * weights).sum(), leaves + params)
    T = make_transform(d6, log_scale, translation)  # a fresh graph for the reference
    grads_ref = torch.autograd.grad((reference_features(sampler, points, T, maps) * weights).sum(), leaves + params)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-11)
    assert all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtypes_and_layout(dtype):
    sampler = FeatureSampler3D(in_channels=(3, 4), out_channels=16, focal=FOCAL).to(dtype)
    assert sampler.level_channels == (5, 6) and sampler.out_channels == 16
    maps, points, d6, log_scale, translation = random_problem(3, dtype=dtype, count=7)
    T = make_transform(d6, log_scale, translation)
    out = sampler(points, T, maps)
    assert isinstance(out, PointFeatures)
    assert out.features.shape == (2, 7, 16) and out.uv.shape == (2, 7, 2)
    assert out.rel_depth.shape == (2, 7) and out.points_camera.shape == (2, 7, 3)
    assert {t.dtype for t in (out.features, out.uv, out.rel_depth, out.points_camera)} == {dtype}
    torch.testing.assert_close(out.points_camera, T.apply(points), rtol=0, atol=0)
    torch.testing.assert_close(
        out.uv, FOCAL * out.points_camera[..., :2] / translation[:, None, 2:], rtol=0, atol=ATOL[dtype]
    )
    rel = (out.points_camera[..., 2] - translation[:, None, 2]) / T.scale[:, None]
    torch.testing.assert_close(out.rel_depth, rel, rtol=0, atol=0)
    torch.testing.assert_close(out.features[..., -3:], points, rtol=0, atol=0)
    torch.testing.assert_close(out.features[..., -4], (out.uv.abs() <= 1).all(-1).to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(out.features[..., -5], out.rel_depth, rtol=0, atol=0)


def test_points_outside_the_image_get_exactly_zero_image_features():
    """Also just outside the border, where zero padding alone would still give a partial sample."""
    torch.manual_seed(4)
    sampler = FeatureSampler3D(in_channels=(2,), out_channels=3 + GEOMETRY_CHANNELS, focal=FOCAL).double()
    feature_map = torch.rand(1, 2, 8, 8, generator=gen(5), dtype=torch.float64) + 1.0
    T = SimilarityTransform(
        torch.eye(3, dtype=torch.float64)[None],
        torch.ones(1, dtype=torch.float64),
        torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64),
    )
    u = torch.tensor([0.3, 0.999, 1.02, -1.02, 3.0], dtype=torch.float64)  # normalized; 1 + 1/8 is half a cell out
    points = torch.stack([u / FOCAL, torch.zeros_like(u), torch.zeros_like(u)], dim=-1)[None]
    out = sampler(points, T, [feature_map])
    image = out.features[0, :, :3]
    assert (image[:2].abs().sum(-1) > 0).all() and torch.count_nonzero(image[2:]) == 0
    assert out.features[0, :, 3 + 1].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]  # the valid flag
    padded_only = F.grid_sample(sampler.reduce[0](feature_map), out.uv[:, None, 2:4], align_corners=False)
    assert padded_only.abs().min() > 0.1  # what the mask removes


def test_gradcheck_wrt_features_points_and_transform():
    sampler = make_sampler(6, out_channels=8)
    maps, points, d6, log_scale, translation = random_problem(7, count=4)
    inputs = tuple(x.clone().requires_grad_(True) for x in (*maps, points, d6, log_scale, translation))

    def run(map0, map1, pts, rot6d, log_s, t):
        out = sampler(pts, make_transform(rot6d, log_s, t), [map0, map1])
        return out.features, out.uv, out.rel_depth, out.points_camera

    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_integration_with_backbone_and_localization():
    torch.manual_seed(8)
    backbone = ResNetBackbone(width=4, blocks=(1, 1, 1, 1))
    nominal = nominal_pose_from_rig(RIG)
    localization = LocalizationNet(
        in_channels=backbone.out_channels[-1],
        hidden=16,
        nominal_rotation=nominal.rotation,
        nominal_scale=nominal.scale,
        nominal_translation=nominal.translation,
    )
    sampler = FeatureSampler3D(in_channels=backbone.out_channels, out_channels=32, focal=FOCAL)
    features = backbone(torch.rand(3, 3, 64, 64, generator=gen(9)))
    T = localization(features.pooled)
    points = torch.rand(3, 50, 3, generator=gen(10)) - 0.5
    out = sampler(points, T, features.maps)
    assert out.features.shape == (3, 50, 32) and sampler.level_channels == (6, 7, 7, 7)
    assert (out.features[..., -4] == 1).all()  # a 0.15 m object at the nominal pose is inside the image
    assert out.uv.abs().max() < FOCAL * 0.15 * HALF_DIAGONAL / (1 - 0.15 * HALF_DIAGONAL) + 1e-6


def test_split_channels():
    assert split_channels(59, 4) == (14, 15, 15, 15)
    assert split_channels(8, 4) == (2, 2, 2, 2) and split_channels(5, 2) == (2, 3)
    for total in range(4, 40):
        parts = split_channels(total, 4)
        assert sum(parts) == total and max(parts) - min(parts) <= 1 and list(parts) == sorted(parts)


def test_bad_inputs_raise_clear_errors():
    sampler = make_sampler(9)
    maps, points, d6, log_scale, translation = random_problem(10)
    T = make_transform(d6, log_scale, translation)
    with pytest.raises(ValueError, match=r"expected 2 feature maps"):
        sampler(points, T, maps[:1])
    with pytest.raises(ValueError, match=r"maps\[1\] must be \(B=2, 4, H, W\)"):
        sampler(points, T, [maps[0], maps[1][:, :3]])
    with pytest.raises(ValueError, match=r"maps\[0\] must be \(B=2, 3, H, W\)"):
        sampler(points, T, [maps[0][:1], maps[1]])
    with pytest.raises(ValueError, match=r"points must be a float \(B, N, 3\)"):
        sampler(points[..., :2], T, maps)
    with pytest.raises(ValueError, match="transform must have rotation"):
        sampler(points[:1], T, [m[:1] for m in maps])
    bad_scale = SimilarityTransform(T.rotation, -T.scale, T.translation)
    with pytest.raises(ValueError, match="transform scales must be > 0"):
        sampler(points, bad_scale, maps)
    behind = SimilarityTransform(
        T.rotation, T.scale, T.translation * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="t_z must be > 0"):
        sampler(points, behind, maps)
    with pytest.raises(ValueError, match=r"translation must be \(B, 3\)"):
        project_weak_perspective(points, translation[:1], FOCAL)
    with pytest.raises(ValueError, match="focal must be > 0"):
        project_weak_perspective(points, translation, 0.0)
    with pytest.raises(ValueError, match=r"out_channels must be >= 7"):
        FeatureSampler3D(in_channels=(3, 4), out_channels=6, focal=FOCAL)
    with pytest.raises(ValueError, match="focal must be > 0"):
        FeatureSampler3D(in_channels=(3,), out_channels=8, focal=-1.0)
    with pytest.raises(ValueError, match="in_channels must be a non-empty"):
        FeatureSampler3D(in_channels=(), out_channels=8, focal=FOCAL)


def test_packed_sampling_matches_the_naive_loop_values_and_gradients():
    """sample_packed (points packed over the batch, four gathers per map) = the naive per-point loop,
    including points beyond the image border."""
    sampler, maps, points, d6, log_scale, translation, leaves = differentiable_problem(4, 5)
    T = make_transform(d6, log_scale, translation)
    batch, count = points.shape[:2]
    order = torch.randperm(batch * count, generator=gen(6))  # packed rows in any order
    packed = points.reshape(-1, 3)[order]
    index = torch.arange(batch).repeat_interleave(count)[order]
    got = sampler.sample_packed(packed, index, T, sampler.reduce_maps(maps))
    expected = reference_features(sampler, points, T, maps).reshape(batch * count, -1)[order]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    weights = torch.randn(got.shape, generator=gen(7), dtype=torch.float64)
    params = list(sampler.parameters())
    grads = torch.autograd.grad((got * weights).sum(), leaves + params)
    T = make_transform(d6, log_scale, translation)
    want = reference_features(sampler, points, T, maps).reshape(batch * count, -1)[order]
    grads_ref = torch.autograd.grad((want * weights).sum(), leaves + params)
    for g, w in zip(grads, grads_ref):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-11)


def test_bilinear_packed_equals_grid_sample_values_and_gradients():
    g = gen(8)
    feature_map = torch.randn(3, 5, 7, 9, dtype=torch.float64, generator=g, requires_grad=True)
    uv = (torch.rand(3, 40, 2, dtype=torch.float64, generator=g) * 2.6 - 1.3).requires_grad_(True)  # some outside
    ref = F.grid_sample(feature_map, uv[:, None], mode="bilinear", padding_mode="zeros", align_corners=False)
    ref = ref[:, :, 0].transpose(1, 2)
    got = bilinear_packed(feature_map, torch.arange(3).repeat_interleave(40), uv.reshape(-1, 2)).view(3, 40, 5)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-13)
    weights = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((got * weights).sum(), (feature_map, uv)),
                    torch.autograd.grad((ref * weights).sum(), (feature_map, uv))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
