"""Loss terms against direct computations, weights, and the non-finite guard."""

from __future__ import annotations

import math

import pytest
import torch

from pointstn.models.decoder_types import LevelOutput
from pointstn.models.losses import (
    ANCHOR_TEMPERATURE,
    LossWeights,
    Targets,
    random_subset,
    reconstruction_loss,
    up_axis_loss,
    welsch,
)
from pointstn.models.reconstructor import ReconstructionOutput
from pointstn.models.types import RotationHypotheses, SimilarityTransform
from pointstn.ops.rotation import axis_angle_to_matrix


def naive_chamfer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return d.min(1).values.mean() + d.min(0).values.mean()


def make_case(with_decoder: bool):
    g = torch.Generator().manual_seed(0)
    B = 2
    rotation = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 0.3], [0.2, 0.0, 0.0]], dtype=torch.float64))
    transform = SimilarityTransform(rotation, torch.tensor([0.2, 0.1], dtype=torch.float64),
                                    torch.tensor([[0.0, 0.0, 1.0], [0.05, 0.0, 0.9]], dtype=torch.float64))
    coarse = torch.rand(B, 20, 3, generator=g, dtype=torch.float64) - 0.5
    fine = torch.rand(B, 30, 3, generator=g, dtype=torch.float64) - 0.5
    lengths = torch.tensor([30, 25])
    levels = ()
    if with_decoder:
        logits = torch.randn(7, generator=g, dtype=torch.float64)
        levels = (LevelOutput(torch.zeros(7, 4, dtype=torch.int32), logits, (logits > 0).double(), 8),)
    points = fine if with_decoder else coarse
    out = ReconstructionOutput(points=points, lengths=lengths if with_decoder else torch.tensor([20, 20]),
                               points_camera=transform.apply(points), transform=transform, coarse=coarse,
                               coarse_camera=transform.apply(coarse), levels=levels)
    size = torch.tensor([0.25, 0.12], dtype=torch.float64)
    gt = (torch.rand(B, 40, 3, generator=g, dtype=torch.float64) - 0.5) * size[:, None, None]
    true_rotation = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.0, 0.5]], dtype=torch.float64))
    camera = gt @ true_rotation.transpose(1, 2) + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return out, Targets(points=gt, points_camera=camera, rotation=true_rotation, size=size)


def test_terms_match_direct_computation():
    out, targets = make_case(with_decoder=True)
    loss = reconstruction_loss(out, targets, LossWeights())
    gt_n = targets.points / targets.size[:, None, None]
    expected = {
        "chamfer_coarse_canonical": sum(naive_chamfer(out.coarse[b], gt_n[b]) for b in range(2)) / 2,
        "chamfer_fine_canonical": sum(naive_chamfer(out.points[b, : out.lengths[b]], gt_n[b]) for b in range(2)) / 2,
        "chamfer_coarse_camera": sum(naive_chamfer(out.coarse_camera[b], targets.points_camera[b]) / targets.size[b] ** 2
                                     for b in range(2)) / 2,
        "chamfer_fine_camera": sum(naive_chamfer(out.points_camera[b, : out.lengths[b]], targets.points_camera[b])
                                   / targets.size[b] ** 2 for b in range(2)) / 2,
    }
    for name, value in expected.items():
        torch.testing.assert_close(loss.terms[name], value, rtol=1e-10, atol=0)
    level = out.levels[0]
    bce = torch.nn.functional.binary_cross_entropy(torch.sigmoid(level.logits), level.targets)
    torch.testing.assert_close(loss.terms["occupancy"], bce, rtol=1e-10, atol=0)
    # geodesic angles: sample 0 turned 0.3 rad about z vs identity; sample 1 differs by a known rotation
    relative = out.transform.rotation[1] @ targets.rotation[1].T
    angle1 = math.degrees(math.acos((float(torch.trace(relative)) - 1) / 2))
    torch.testing.assert_close(loss.terms["rotation_deg"], torch.tensor((math.degrees(0.3) + angle1) / 2,
                                                                        dtype=torch.float64), rtol=1e-9, atol=0)
    total = sum(v for k, v in expected.items()) + loss.terms["occupancy"]
    torch.testing.assert_close(loss.total, total, rtol=1e-10, atol=0)


def naive_unsquared_chamfer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a[:, None, :] - b[None, :, :]).norm(dim=-1)
    return d.min(1).values.mean() + d.min(0).values.mean()


def check_fine_terms(weights: LossWeights, reference_chamfer, *, rtol: float, grad_atol: float):
    """Only the fine cloud's terms change; they match `reference_chamfer(a, b)` summed over the samples'
    clouds (the camera frame's measured in object sizes), in values and in the gradients that reach the
    fine points through the padded, ragged clouds. Returns the loss terms and the fine points' gradient."""
    out, targets = make_case(with_decoder=True)
    fine = out.points.detach().clone().requires_grad_(True)
    out = ReconstructionOutput(points=fine, lengths=out.lengths, points_camera=out.transform.apply(fine),
                               transform=out.transform, coarse=out.coarse, coarse_camera=out.coarse_camera,
                               levels=out.levels)
    squared = reconstruction_loss(out, targets, LossWeights())
    loss = reconstruction_loss(out, targets, weights)
    gt_n = targets.points / targets.size[:, None, None]
    reference = fine.detach().clone().requires_grad_(True)
    reference_camera = out.transform.apply(reference)
    size = targets.size
    expected = {
        "chamfer_fine_canonical": sum(reference_chamfer(reference[b, : out.lengths[b]], gt_n[b])
                                      for b in range(2)) / 2,
        "chamfer_fine_camera": sum(reference_chamfer(reference_camera[b, : out.lengths[b]] / size[b],
                                                     targets.points_camera[b] / size[b]) for b in range(2)) / 2,
    }
    for name, value in expected.items():
        torch.testing.assert_close(loss.terms[name], value, rtol=rtol, atol=0)
    for name in ("chamfer_coarse_canonical", "chamfer_coarse_camera", "occupancy"):
        torch.testing.assert_close(loss.terms[name], squared.terms[name], rtol=0, atol=0)
    (grad,) = torch.autograd.grad(loss.terms["chamfer_fine_canonical"] + loss.terms["chamfer_fine_camera"], fine)
    (expected_grad,) = torch.autograd.grad(sum(expected.values()), reference)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=grad_atol)
    assert grad[1, out.lengths[1]:].abs().max() == 0  # padded rows get no gradient
    return loss.terms, grad


def test_unsquared_fine_terms_match_the_euclidean_reference_in_values_and_gradients():
    """The camera frame's terms are divided by the longest edge, not its square (the same as measuring
    the clouds in object sizes); 1e-9: UNSQUARED_EPS inside the square root."""
    check_fine_terms(LossWeights(fine_distance="unsquared"), naive_unsquared_chamfer, rtol=1e-9, grad_atol=1e-12)


def naive_welsch_chamfer(a: torch.Tensor, b: torch.Tensor, width: float) -> torch.Tensor:
    d = (a[:, None, :] - b[None, :, :]).norm(dim=-1)
    rho = lambda x: width * (1 - torch.exp(-(x**2) / (2 * width**2)))
    return rho(d.min(1).values).mean() + rho(d.min(0).values).mean()


@pytest.mark.parametrize("width", [0.01, 0.3])
def test_robust_fine_terms_match_the_welsch_reference_in_values_and_gradients(width):
    """The Welsch distance of each nearest neighbour, with the camera frame measured in object sizes (so
    `robust_scale` means the same in both frames); the coarse terms stay squared."""
    terms, grad = check_fine_terms(LossWeights(fine_distance="robust", robust_scale=width),
                                   lambda a, b: naive_welsch_chamfer(a, b, width), rtol=1e-10, grad_atol=1e-14)
    for name in ("chamfer_fine_canonical", "chamfer_fine_camera"):
        assert float(terms[name].detach()) <= 2 * width  # each direction's mean is at most the width
    assert grad.abs().max() > 0


def test_the_robust_distance_is_half_the_squared_over_the_width_near_zero_and_bounded_far_away():
    squared = torch.tensor([0.0, 1e-10, 1.0, 100.0], dtype=torch.float64)
    values = welsch(squared, 0.01)
    torch.testing.assert_close(values[:2], squared[:2] / (2 * 0.01), rtol=1e-6, atol=0)
    torch.testing.assert_close(values[2:], torch.full((2,), 0.01, dtype=torch.float64), rtol=1e-12, atol=0)


def test_an_unknown_fine_distance_is_refused():
    out, targets = make_case(with_decoder=True)
    with pytest.raises(ValueError, match="unknown Chamfer distance 'cubed'; valid: squared, unsquared, robust"):
        reconstruction_loss(out, targets, LossWeights(fine_distance="cubed"))


def test_weights_and_no_decoder():
    out, targets = make_case(with_decoder=False)
    weights = LossWeights(chamfer_coarse=2.0, canonical_frame=0.5, camera_frame=3.0, rotation=1.0)
    loss = reconstruction_loss(out, targets, weights)
    assert set(loss.terms) == {"chamfer_coarse_canonical", "chamfer_coarse_camera", "rotation_deg"}
    expected = (2.0 * 0.5 * loss.terms["chamfer_coarse_canonical"] + 2.0 * 3.0 * loss.terms["chamfer_coarse_camera"]
                + torch.deg2rad(loss.terms["rotation_deg"]))
    torch.testing.assert_close(loss.total, expected, rtol=1e-10, atol=0)
    assert set(loss.scalars()) == {"total", *loss.terms}


@pytest.mark.parametrize("factor", [0.0, 0.25])
def test_the_fine_canonical_factor_weighs_only_the_fine_clouds_canonical_term(factor):
    """`fine_canonical_frame` scales the fine cloud's canonical-frame term alone: the logged terms are the
    same as with factor 1, the total and the fine points' gradient follow the factor, and at 0 the term
    is logged without autograd."""
    out, targets = make_case(with_decoder=True)
    fine = out.points.detach().clone().requires_grad_(True)
    out = ReconstructionOutput(points=fine, lengths=out.lengths, points_camera=out.transform.apply(fine),
                               transform=out.transform, coarse=out.coarse, coarse_camera=out.coarse_camera,
                               levels=out.levels)
    base = LossWeights(canonical_frame=0.5, camera_frame=2.0, chamfer_fine=3.0)
    full = reconstruction_loss(out, targets, base)
    loss = reconstruction_loss(out, targets, LossWeights(canonical_frame=0.5, camera_frame=2.0, chamfer_fine=3.0,
                                                         fine_canonical_frame=factor))
    for name, value in full.terms.items():
        torch.testing.assert_close(loss.terms[name], value.detach(), rtol=0, atol=0)
    terms = full.terms
    expected = (0.5 * terms["chamfer_coarse_canonical"] + 2.0 * terms["chamfer_coarse_camera"]
                + 3.0 * 0.5 * factor * terms["chamfer_fine_canonical"] + 3.0 * 2.0 * terms["chamfer_fine_camera"]
                + terms["occupancy"])
    torch.testing.assert_close(loss.total, expected, rtol=1e-12, atol=0)
    assert loss.terms["chamfer_fine_canonical"].requires_grad == (factor > 0)
    (grad,) = torch.autograd.grad(loss.total, fine, retain_graph=True)
    (canonical_grad,) = torch.autograd.grad(terms["chamfer_fine_canonical"], fine, retain_graph=True)
    (expected_grad,) = torch.autograd.grad(expected, fine)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-14)
    assert canonical_grad.abs().max() > 0  # the factor has a term to remove


def test_non_finite_loss_names_its_terms():
    out, targets = make_case(with_decoder=True)
    level = out.levels[0]
    broken = LevelOutput(level.coords, torch.full_like(level.logits, float("nan")), level.targets, level.resolution)
    out = ReconstructionOutput(**{**out.__dict__, "levels": (broken,)})
    with pytest.raises(FloatingPointError, match="non-finite loss: .*occupancy=nan"):
        reconstruction_loss(out, targets, LossWeights())


def naive_rotation_distance(canonical, rotation, truth, unique):
    """The normalized truth turned by both rotations: by correspondence, or Chamfer / 2 when not unique."""
    turned, target = canonical @ rotation.T, canonical @ truth.T
    return ((turned - target) ** 2).sum(-1).mean() if unique else naive_chamfer(turned, target) / 2


def naive_scale_translation(out, targets, b):
    """Squared log scale ratio + squared translation error / size**2 of sample b."""
    scale = (out.transform.scale[b].log() - targets.size[b].log()) ** 2
    true_t = targets.points_camera[b, 0] - targets.points[b, 0] @ targets.rotation[b].T
    return scale + ((out.transform.translation[b] - true_t) ** 2).sum() / targets.size[b] ** 2


def naive_pose(out, targets, unique):
    """Loop reference: rotation distance + squared log scale ratio + squared translation error / size**2, averaged."""
    values = []
    for b in range(targets.points.shape[0]):
        canonical = targets.points[b] / targets.size[b]
        rotation = naive_rotation_distance(canonical, out.transform.rotation[b], targets.rotation[b], unique[b])
        values.append(rotation + naive_scale_translation(out, targets, b))
    return sum(values) / len(values)


@pytest.mark.parametrize("unique", [(True, False), (False, True), None])
def test_pose_term_matches_reference_values_and_gradients(unique):
    out, targets = make_case(with_decoder=False)
    rotation = out.transform.rotation.clone().requires_grad_(True)
    translation = out.transform.translation.clone().requires_grad_(True)
    scale = out.transform.scale.clone().requires_grad_(True)
    transform = SimilarityTransform(rotation, scale, translation)
    out = ReconstructionOutput(points=out.points, lengths=out.lengths, points_camera=out.points_camera,
                               transform=transform, coarse=out.coarse, coarse_camera=out.coarse_camera, levels=())
    flags = None if unique is None else torch.tensor(unique)
    targets = Targets(points=targets.points, points_camera=targets.points_camera, rotation=targets.rotation,
                      size=targets.size, unique_rotation=flags)
    loss = reconstruction_loss(out, targets, LossWeights(pose=1.0, chamfer_coarse=0.0))
    expected = naive_pose(out, targets, (False, False) if unique is None else unique)
    torch.testing.assert_close(loss.terms["pose"], expected, rtol=1e-10, atol=0)
    got = torch.autograd.grad(loss.total, (rotation, scale, translation))
    want = torch.autograd.grad(expected, (rotation, scale, translation))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-12)


def test_pose_term_is_zero_at_the_true_pose_and_symmetric_equivalents_cost_nothing():
    g = torch.Generator().manual_seed(3)
    theta = torch.linspace(0, 2 * math.pi, 65, dtype=torch.float64)[:-1]
    ring = torch.stack((0.5 * torch.cos(theta), 0.5 * torch.sin(theta), torch.zeros_like(theta)), -1)[None]
    size = torch.tensor([1.0], dtype=torch.float64)
    true_rotation = axis_angle_to_matrix(torch.rand(1, 3, generator=g, dtype=torch.float64))
    t = torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64)
    camera = ring @ true_rotation.transpose(1, 2) + t
    spun = true_rotation @ axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 2 * math.pi / 64 * 5]], dtype=torch.float64))

    def pose(rotation, unique):
        transform = SimilarityTransform(rotation, size, t)
        out = ReconstructionOutput(points=ring, lengths=torch.tensor([64]), points_camera=ring, transform=transform,
                                   coarse=ring, coarse_camera=ring, levels=())
        targets = Targets(points=ring, points_camera=camera, rotation=true_rotation, size=size,
                          unique_rotation=torch.tensor([unique]))
        return float(reconstruction_loss(out, targets, LossWeights(pose=1.0)).terms["pose"])

    assert pose(true_rotation, True) < 1e-20 and pose(true_rotation, False) < 1e-20
    assert pose(spun, False) < 1e-20  # a symmetric ring turned about its axis by whole sample steps: same surface
    assert pose(spun, True) > 0.05  # by correspondence the same turn costs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_up_axis_term_matches_the_angle_reference_in_values_and_gradients(seed):
    """sin^2 of the angle between the up lines, from acos in float64, values and gradients."""
    g = torch.Generator().manual_seed(seed)
    rotation = axis_angle_to_matrix(torch.randn(5, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    truth = axis_angle_to_matrix(torch.randn(5, 3, generator=g, dtype=torch.float64))
    angles = torch.stack([torch.acos(torch.dot(rotation[b, :, 2], truth[b, :, 2]).clamp(-1, 1)) for b in range(5)])
    expected = torch.sin(angles).square().mean()
    torch.testing.assert_close(up_axis_loss(rotation, truth), expected, rtol=1e-10, atol=1e-14)
    got = torch.autograd.grad(up_axis_loss(rotation, truth), rotation)[0]
    want = torch.autograd.grad(expected, rotation)[0]
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10)


def test_up_axis_term_ignores_turns_about_the_up_axis_and_flips_of_the_line():
    g = torch.Generator().manual_seed(4)
    truth = axis_angle_to_matrix(torch.randn(3, 3, generator=g, dtype=torch.float64))
    about_up = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -2.5], [0.0, 0.0, 3.0]],
                                                 dtype=torch.float64))
    upside_down = axis_angle_to_matrix(torch.tensor([[math.pi, 0.0, 0.0]], dtype=torch.float64))
    assert float(up_axis_loss(truth @ about_up, truth)) < 1e-15
    assert float(up_axis_loss(truth @ upside_down, truth)) < 1e-15
    quarter = axis_angle_to_matrix(torch.tensor([[0.0, math.pi / 2, 0.0]], dtype=torch.float64))
    assert float(up_axis_loss(truth @ quarter, truth)) == pytest.approx(1.0, abs=1e-12)  # up lies on its side


def test_up_axis_weight_adds_the_term():
    out, targets = make_case(with_decoder=False)
    base = reconstruction_loss(out, targets, LossWeights())
    weighted = reconstruction_loss(out, targets, LossWeights(up_axis=2.5))
    assert "up_axis" not in base.terms
    torch.testing.assert_close(weighted.terms["up_axis"], up_axis_loss(out.transform.rotation, targets.rotation))
    torch.testing.assert_close(weighted.total, base.total + 2.5 * weighted.terms["up_axis"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("unique", [(True, False), (False, True)])
def test_anchor_pose_term_matches_reference_values_and_gradients(unique):
    """With rotation hypotheses: soft-label cross-entropy over the anchors + the rotation term of the
    anchor nearest the truth (refined); scale and translation as without anchors."""
    out, targets = make_case(with_decoder=False)
    g = torch.Generator().manual_seed(5)
    K = 6
    anchors = axis_angle_to_matrix(torch.randn(K, 3, generator=g, dtype=torch.float64))
    anchors[2] = targets.rotation[0] @ axis_angle_to_matrix(torch.tensor([[0.0, 0.05, 0.0]], dtype=torch.float64))[0]
    logits = torch.randn(2, K, generator=g, dtype=torch.float64, requires_grad=True)
    rotations = (axis_angle_to_matrix(0.1 * torch.randn(2, K, 3, generator=g, dtype=torch.float64)) @ anchors
                 ).requires_grad_(True)
    hypotheses = RotationHypotheses(logits=logits, rotations=rotations, anchors=anchors)
    out = ReconstructionOutput(**{**out.__dict__, "levels": (), "rotation_hypotheses": hypotheses})
    targets = Targets(points=targets.points, points_camera=targets.points_camera, rotation=targets.rotation,
                      size=targets.size, unique_rotation=torch.tensor(unique))
    loss = reconstruction_loss(out, targets, LossWeights(pose=1.0, chamfer_coarse=0.0))
    values = []
    for b in range(2):  # 40 ground-truth points: below POSE_POINTS and ANCHOR_POINTS, so every point is used
        canonical = targets.points[b] / targets.size[b]
        d = torch.stack([naive_rotation_distance(canonical, a, targets.rotation[b], unique[b]) for a in anchors])
        labels = torch.softmax(-d / ANCHOR_TEMPERATURE, dim=0)
        nearest = int(d.argmin())
        cross_entropy = -(labels * torch.log_softmax(logits[b], dim=0)).sum()
        rotation = naive_rotation_distance(canonical, rotations[b, nearest], targets.rotation[b], unique[b])
        values.append(cross_entropy + rotation + naive_scale_translation(out, targets, b))
    expected = sum(values) / 2
    assert int(torch.stack([naive_rotation_distance(targets.points[0] / targets.size[0], a, targets.rotation[0],
                                                    unique[0]) for a in anchors]).argmin()) == 2
    torch.testing.assert_close(loss.terms["pose"], expected, rtol=1e-10, atol=0)
    got = torch.autograd.grad(loss.terms["pose"], (logits, rotations))
    want = torch.autograd.grad(expected, (logits, rotations))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_random_subset_keeps_valid_rows_of_every_tensor():
    torch.manual_seed(0)
    points = torch.randn(3, 50, 3)
    lengths = torch.tensor([50, 7, 30])
    camera = points * 2 + 1
    sub, sub_camera, sub_lengths = random_subset(points, lengths, 20, camera)
    assert sub.shape == (3, 20, 3) and sub_lengths.tolist() == [20, 7, 20]
    torch.testing.assert_close(sub_camera, sub * 2 + 1)  # the same rows in both tensors
    for b in range(3):
        valid = {tuple(p) for p in points[b, : lengths[b]].tolist()}
        chosen = [tuple(p) for p in sub[b, : sub_lengths[b]].tolist()]
        assert set(chosen) <= valid and len(set(chosen)) == len(chosen)  # valid, without repeats
    # fewer valid points than asked: all of them
    assert {tuple(p) for p in sub[1, :7].tolist()} == {tuple(p) for p in points[1, :7].tolist()}
    same = random_subset(points, lengths, 64)
    assert same[0] is points and same[1] is lengths


def test_fine_points_limits_the_fine_cloud_in_the_chamfer_terms():
    out, targets = make_case(with_decoder=True)
    full = reconstruction_loss(out, targets, LossWeights())
    torch.manual_seed(1)
    limited = reconstruction_loss(out, targets, LossWeights(), fine_points=30)  # 30 >= every length: same terms
    torch.testing.assert_close(limited.terms["chamfer_fine_canonical"], full.terms["chamfer_fine_canonical"])
    torch.manual_seed(1)
    few = reconstruction_loss(out, targets, LossWeights(), fine_points=5)
    assert few.terms["chamfer_fine_canonical"] != full.terms["chamfer_fine_canonical"]
    torch.testing.assert_close(few.terms["chamfer_coarse_canonical"], full.terms["chamfer_coarse_canonical"])
