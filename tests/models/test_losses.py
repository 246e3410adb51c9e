"""Loss terms against direct computations, weights, and the non-finite guard."""

from __future__ import annotations

import math

import pytest
import torch

from pointstn.models.decoder_types import LevelOutput
from pointstn.models.losses import LossWeights, Targets, reconstruction_loss
from pointstn.models.reconstructor import ReconstructionOutput
from pointstn.models.types import SimilarityTransform
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


def test_weights_and_no_decoder():
    out, targets = make_case(with_decoder=False)
    weights = LossWeights(chamfer_coarse=2.0, canonical_frame=0.5, camera_frame=3.0, rotation=1.0)
    loss = reconstruction_loss(out, targets, weights)
    assert set(loss.terms) == {"chamfer_coarse_canonical", "chamfer_coarse_camera", "rotation_deg"}
    expected = (2.0 * 0.5 * loss.terms["chamfer_coarse_canonical"] + 2.0 * 3.0 * loss.terms["chamfer_coarse_camera"]
                + torch.deg2rad(loss.terms["rotation_deg"]))
    torch.testing.assert_close(loss.total, expected, rtol=1e-10, atol=0)
    assert set(loss.scalars()) == {"total", *loss.terms}


def test_non_finite_loss_names_its_terms():
    out, targets = make_case(with_decoder=True)
    level = out.levels[0]
    broken = LevelOutput(level.coords, torch.full_like(level.logits, float("nan")), level.targets, level.resolution)
    out = ReconstructionOutput(**{**out.__dict__, "levels": (broken,)})
    with pytest.raises(FloatingPointError, match="non-finite loss: .*occupancy=nan"):
        reconstruction_loss(out, targets, LossWeights())
