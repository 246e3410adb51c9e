"""Tests for pointstn.models.localization (LocalizationNet, nominal_pose_from_rig)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pointstn.data.render.rig import Rig
from pointstn.models.localization import LocalizationNet, nominal_pose_from_rig, rotation_anchors
from pointstn.ops.rotation import geodesic_angle, random_rotation

ATOL = {torch.float32: 2e-6, torch.float64: 1e-12}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_net(*, in_channels: int = 16, hidden: int = 12, enabled: bool = True, seed: int = 0) -> LocalizationNet:
    nominal = nominal_pose_from_rig(Rig())
    torch.manual_seed(seed)
    return LocalizationNet(
        in_channels=in_channels,
        hidden=hidden,
        nominal_rotation=nominal.rotation,
        nominal_scale=nominal.scale,
        nominal_translation=nominal.translation,
        enabled=enabled,
    )


def randomize(net: LocalizationNet, *, seed: int, std: float = 1.0) -> None:
    """Trained-looking weights: every parameter ~ N(0, std^2), including the zero-initialised last layer."""
    g = gen(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def assert_rotation(R: torch.Tensor) -> None:
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, rtol=0, atol=ATOL[R.dtype])
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(R.shape[0], dtype=R.dtype), rtol=0, atol=ATOL[R.dtype])


def gram_schmidt(d6: np.ndarray) -> np.ndarray:
    """Float64 numpy 6D -> rotation: rows a1 normalized, a2 orthogonalized and normalized, their cross product."""
    a1, a2 = d6[:3], d6[3:6]
    r0 = a1 / np.linalg.norm(a1)
    r1 = a2 - r0.dot(a2) * r0
    r1 /= np.linalg.norm(r1)
    return np.stack([r0, r1, np.cross(r0, r1)])


def reference_forward(net: LocalizationNet, pooled: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 numpy version of the documented head, one sample at a time."""
    w1, b1, w2, b2 = (p.detach().double().numpy() for p in net.parameters())
    R_nom = net.nominal_rotation.numpy()
    rotations, scales, translations = [], [], []
    for x in pooled.detach().double().numpy():
        out = w2 @ np.maximum(w1 @ x + b1, 0.0) + b2
        rotations.append(gram_schmidt(out[:6]) @ R_nom)
        scales.append(net.nominal_scale.item() * math.exp(3.0 * math.tanh(out[6] / 3.0)))
        translations.append(net.nominal_translation.numpy() + 0.5 * np.tanh(out[7:] / 0.5))
    return np.stack(rotations), np.array(scales), np.stack(translations)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_equals_the_nominal_pose_exactly_at_init(dtype):
    for nominal_rotation in (
        nominal_pose_from_rig(Rig()).rotation,
        random_rotation(1, generator=gen(1), dtype=torch.float64)[0],
    ):
        net = LocalizationNet(
            in_channels=16,
            nominal_rotation=nominal_rotation,
            nominal_scale=0.15,
            nominal_translation=[0.01, -0.02, 1.0],
        ).to(dtype)
        pooled = torch.randn(7, 16, generator=gen(2), dtype=dtype) * 5
        T = net(pooled)
        assert T.rotation.shape == (7, 3, 3) and T.scale.shape == (7,) and T.translation.shape == (7, 3)
        assert T.rotation.dtype == T.scale.dtype == T.translation.dtype == dtype
        assert torch.equal(T.rotation, nominal_rotation.to(dtype).expand(7, 3, 3))
        assert torch.equal(T.scale, torch.full((7,), 0.15, dtype=torch.float64).to(dtype))
        assert torch.equal(T.translation, torch.tensor([0.01, -0.02, 1.0], dtype=torch.float64).to(dtype).expand(7, 3))


def test_identity_init_still_learns():
    """At init only the zero-initialised last layer receives gradient (as in the original STN)."""
    net = make_net()
    T = net(torch.randn(4, 16, generator=gen(3)))
    (T.rotation.sum() + T.scale.sum() + T.translation.sum()).backward()
    first, last = net.mlp[0], net.mlp[2]
    assert last.weight.grad.abs().sum() > 0 and last.bias.grad.abs().sum() > 0
    assert first.weight.grad.abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_weights_give_proper_rotations_and_bounded_scale_and_translation(dtype):
    net = make_net(seed=4)
    randomize(net, seed=5)
    net = net.to(dtype)
    pooled = torch.cat(
        [torch.randn(50, 16, generator=gen(6), dtype=dtype), 1e3 * torch.randn(10, 16, generator=gen(7), dtype=dtype)]
    )
    T = net(pooled)
    assert_rotation(T.rotation)
    assert torch.isfinite(T.scale).all() and (T.scale > 0).all()
    log_ratio = torch.log(T.scale.double() / 0.15)
    assert log_ratio.abs().max() <= 3.0 + 1e-6 and log_ratio.abs().max() > 1.0  # the clamp is reached, not exceeded
    offset = T.translation.double() - torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert offset.abs().max() <= 0.5 + 1e-6 and (T.translation[:, 2] > 0).all()


def test_matches_float64_reference():
    net = make_net(seed=8).double()
    randomize(net, seed=9, std=0.5)
    pooled = torch.randn(6, 16, generator=gen(10), dtype=torch.float64)
    T = net(pooled)
    R, s, t = reference_forward(net, pooled)
    torch.testing.assert_close(T.rotation, torch.from_numpy(R), rtol=0, atol=1e-12)
    torch.testing.assert_close(T.scale, torch.from_numpy(s), rtol=1e-12, atol=0)
    torch.testing.assert_close(T.translation, torch.from_numpy(t), rtol=0, atol=1e-12)


def test_gradcheck_wrt_pooled_float64():
    net = make_net(in_channels=5, hidden=6, seed=11).double()
    randomize(net, seed=12)
    pooled = torch.randn(3, 5, generator=gen(13), dtype=torch.float64, requires_grad=True)

    def outputs(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        T = net(x)
        return T.rotation, T.scale, T.translation

    assert torch.autograd.gradcheck(outputs, (pooled,), eps=1e-6, atol=1e-7, rtol=1e-5)
    # the gradient is not trivially zero (the check can fail)
    R, _, _ = outputs(pooled)
    (grad,) = torch.autograd.grad(R.sum(), pooled)
    assert grad.abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_disabled_returns_nominal_without_parameters(dtype):
    net = make_net(enabled=False)
    assert list(net.parameters()) == [] and net.mlp is None
    nominal = nominal_pose_from_rig(Rig())
    for batch in (1, 5):
        T = net(torch.randn(batch, 16, generator=gen(batch), dtype=dtype))
        assert T.rotation.shape == (batch, 3, 3) and T.scale.shape == (batch,) and T.translation.shape == (batch, 3)
        assert T.rotation.dtype == T.scale.dtype == T.translation.dtype == dtype
        assert torch.equal(T.rotation, nominal.rotation.to(dtype).expand(batch, 3, 3))
        assert torch.equal(T.scale, torch.full((batch,), 0.15, dtype=torch.float64).to(dtype))
        assert torch.equal(T.translation, nominal.translation.to(dtype).expand(batch, 3))
        # outputs are independent copies (safe to modify in place downstream)
        T.rotation[0, 0, 0] = 5.0
        assert net.nominal_rotation[0, 0] != 5.0


def test_nominal_pose_from_rig_geometry():
    rig = Rig()
    nominal = nominal_pose_from_rig(rig)
    assert nominal.rotation.dtype == torch.float64 and nominal.scale == 0.15
    np.testing.assert_array_equal(nominal.rotation.numpy(), rig.view(azimuth_deg=0.0, elevation_deg=20.0).rotation)
    np.testing.assert_array_equal(nominal.translation.numpy(), [0.0, 0.0, 1.0])
    # object +z (up) appears up in the image (camera -y), tilted away by the 20 deg elevation
    el = math.radians(20.0)
    np.testing.assert_allclose(nominal.rotation.numpy() @ [0, 0, 1], [0.0, -math.cos(el), -math.sin(el)], atol=1e-15)
    # the camera looks at the bbox centre: the object centre lies on the optical axis at the rig distance
    other = nominal_pose_from_rig(Rig(distance_range_m=(1.0, 1.4)), elevation_deg=-30.0, scale=0.3)
    np.testing.assert_allclose(other.translation.numpy(), [0.0, 0.0, 1.2], atol=1e-15)
    np.testing.assert_allclose(
        other.rotation.numpy() @ [0, 0, 1], [0.0, -math.cos(-math.pi / 6), math.sin(math.pi / 6)], atol=1e-15
    )
    with pytest.raises(ValueError, match="scale must be > 0"):
        nominal_pose_from_rig(rig, scale=0.0)


def test_bad_inputs_raise_clear_errors():
    net = make_net()
    with pytest.raises(ValueError, match=r"pooled must be a float \(B, 16\)"):
        net(torch.randn(2, 15))
    with pytest.raises(ValueError, match=r"pooled must be a float \(B, 16\)"):
        net(torch.randn(2, 16, 1))
    with pytest.raises(ValueError, match=r"pooled must be a float \(B, 16\)"):
        net(torch.ones(2, 16, dtype=torch.int64))
    good = {"in_channels": 4, "nominal_rotation": np.eye(3), "nominal_scale": 0.15, "nominal_translation": [0, 0, 1]}
    LocalizationNet(**good)
    for key, value, message in [
        ("nominal_rotation", np.diag([1.0, 1.0, -1.0]), "proper rotation"),
        ("nominal_rotation", 1.1 * np.eye(3), "proper rotation"),
        ("nominal_rotation", np.eye(4), r"must be \(3, 3\)"),
        ("nominal_scale", 0.0, "nominal_scale must be a finite number > 0"),
        ("nominal_scale", float("nan"), "nominal_scale must be a finite number > 0"),
        ("nominal_translation", [0, 0], "nominal_translation must be 3 finite numbers"),
        ("nominal_translation", [0, 0, 0.4], "must exceed max_translation"),
        ("in_channels", 0, "in_channels and hidden must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            LocalizationNet(**{**good, key: value})
    assert isinstance(make_net().mlp, nn.Sequential)


def make_anchor_net(*, step: float = 45.0, seed: int = 0) -> LocalizationNet:
    rig = Rig()
    nominal = nominal_pose_from_rig(rig)
    torch.manual_seed(seed)
    return LocalizationNet(in_channels=16, hidden=12, nominal_rotation=nominal.rotation, nominal_scale=nominal.scale,
                           nominal_translation=nominal.translation, anchors=rotation_anchors(rig, step))


def test_rotation_anchors_grid_starts_at_the_nominal_view_and_spans_azimuth_and_elevation():
    rig = Rig()
    anchors = rotation_anchors(rig, 30.0)
    assert anchors.shape == (72, 3, 3) and anchors.dtype == torch.float64  # 12 azimuths x elevations 20 +- 30 k
    assert_rotation(anchors)
    torch.testing.assert_close(anchors[0], nominal_pose_from_rig(rig).rotation, rtol=0, atol=0)
    angles = torch.rad2deg(geodesic_angle(anchors[:, None].expand(-1, 72, -1, -1).reshape(-1, 3, 3),
                                          anchors[None].expand(72, -1, -1, -1).reshape(-1, 3, 3))).view(72, 72)
    nearest = (angles + torch.eye(72, dtype=torch.float64) * 1e3).min(dim=1).values
    assert float(nearest.min()) > 4.0 and float(nearest.max()) < 30.0 + 1e-6  # distinct, no gaps above one step
    with pytest.raises(ValueError, match="anchor step"):
        rotation_anchors(rig, 0.0)


def test_anchor_head_starts_at_the_nominal_pose_and_picks_the_best_scored_refined_anchor():
    net = make_anchor_net()
    pooled = torch.randn(5, 16, generator=gen(1))
    transform, hypotheses = net(pooled, with_hypotheses=True)
    torch.testing.assert_close(transform.rotation, net.nominal_rotation.float().expand(5, 3, 3), rtol=0, atol=0)
    assert hypotheses.logits.shape == (5, net.num_anchors) and hypotheses.rotations.shape == (5, net.num_anchors, 3, 3)
    randomize(net, seed=2)
    net = net.double()
    transform, hypotheses = net(pooled.double(), with_hypotheses=True)
    assert_rotation(hypotheses.rotations.reshape(-1, 3, 3))
    # reference: the documented head, numpy float64, one sample at a time
    w1, b1, w2, b2 = (p.detach().numpy() for p in net.mlp.parameters())
    k = net.num_anchors
    for b, x in enumerate(pooled.double().numpy()):
        out = w2 @ np.maximum(w1 @ x + b1, 0.0) + b2
        best = int(np.argmax(out[:k]))
        expected = gram_schmidt(out[k + 6 * best : k + 6 * best + 6]) @ net.anchors[best].numpy()
        np.testing.assert_allclose(transform.rotation[b].detach().numpy(), expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(hypotheses.logits[b].detach().numpy(), out[:k], rtol=1e-12, atol=1e-12)
    assert net(pooled.double()).rotation.shape == (5, 3, 3)  # forward = the transform alone


def test_anchor_hypotheses_reach_the_reconstruction_output_and_stn_off_has_none():
    from pointstn.config import ExperimentConfig, load_config
    from pointstn.models.build import build_model

    configs = Path(__file__).resolve().parents[2] / "configs"
    config = load_config(configs / "smoke.yaml", ExperimentConfig, ["model.stn.rotation_anchor_step_deg=45"])
    model = build_model(config).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, config.data.image_size, config.data.image_size, generator=gen(3)))
    k = model.localization.num_anchors
    assert k == 8 * 4 and out.rotation_hypotheses.logits.shape == (2, k)  # 8 azimuths x elevations 20, 65, -25, -70
    off = make_anchor_net()
    off.mlp = None  # what enabled=False builds
    transform, hypotheses = off(torch.randn(2, 16, generator=gen(4)), with_hypotheses=True)
    assert hypotheses is None
    torch.testing.assert_close(transform.rotation, off.nominal_rotation.float().expand(2, 3, 3), rtol=0, atol=0)
