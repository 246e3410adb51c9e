"""Evaluation metrics against naive float64 references and hand-checkable cases."""

import numpy as np
import pytest
import torch

from pointstn.ops.metrics import (
    CLOUD_METRIC_KEYS,
    chamfer_l1,
    chamfer_l2,
    cloud_metrics,
    fscore,
    relative_threshold,
    report_cd_l2,
    to_eval_frame,
)
from tests.ops.reference import nearest_euclidean

TOL = {"rtol": 1e-10, "atol": 1e-12}


def _clouds(seed, B=3, P1=40, P2=60):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, P1, 3, generator=g, dtype=torch.float64), torch.rand(
        B, P2, 3, generator=g, dtype=torch.float64
    )


def _naive(pred, gt, threshold):
    """Per-sample (cd_l2 raw, cd_l1, precision, recall, f) of two valid clouds, in numpy."""
    acc, comp = nearest_euclidean(pred, gt), nearest_euclidean(gt, pred)
    precision, recall = float((acc < threshold).mean()), float((comp < threshold).mean())
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return (acc**2).mean() + (comp**2).mean(), 0.5 * (acc.mean() + comp.mean()), precision, recall, f


def test_cloud_against_itself():
    pred, _ = _clouds(0)
    assert torch.equal(chamfer_l2(pred, pred.clone()), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(chamfer_l1(pred, pred.clone()), torch.zeros(3, dtype=torch.float64))
    scores = fscore(pred, pred.clone(), 1e-9)
    assert torch.equal(scores.fscore, torch.ones(3, dtype=torch.float64))


def test_translated_copy_of_a_sparse_cloud():
    """Points 10 apart shifted by 0.1 along x: every nearest distance is exactly 0.1."""
    grid = torch.tensor([[[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]]], dtype=torch.float64)
    shifted = grid + torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(chamfer_l2(shifted, grid), torch.tensor([0.02], dtype=torch.float64))  # 0.01 each way
    torch.testing.assert_close(report_cd_l2(chamfer_l2(shifted, grid)), torch.tensor([20.0], dtype=torch.float64))
    torch.testing.assert_close(chamfer_l1(shifted, grid), torch.tensor([0.1], dtype=torch.float64))
    assert fscore(shifted, grid, 0.11).fscore.item() == 1.0
    assert fscore(shifted, grid, 0.09).fscore.item() == 0.0
    # threshold is strict: exactly-at-threshold points do not count
    assert fscore(grid + torch.tensor([0.5, 0, 0], dtype=torch.float64), grid, 0.5).fscore.item() == 0.0


def test_precision_and_recall_are_directional():
    gt = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]]], dtype=torch.float64)
    pred = gt[:, :1].clone()  # one point, on the gt: precision 1, recall 1/4
    scores = fscore(pred, gt, 0.5)
    assert scores.precision.item() == 1.0 and scores.recall.item() == 0.25
    assert scores.fscore.item() == pytest.approx(2 * 0.25 / 1.25)


def test_metrics_match_naive_reference_with_ragged_lengths():
    pred, gt = _clouds(1)
    pred_lengths, gt_lengths = torch.tensor([40, 13, 1]), torch.tensor([60, 2, 45])
    threshold = torch.tensor([0.05, 0.2, 0.1], dtype=torch.float64)
    l2 = chamfer_l2(pred, gt, pred_lengths, gt_lengths)
    l1 = chamfer_l1(pred, gt, pred_lengths, gt_lengths)
    scores = fscore(pred, gt, threshold, pred_lengths, gt_lengths)
    for b in range(3):
        p, g = pred[b, : pred_lengths[b]].numpy(), gt[b, : gt_lengths[b]].numpy()
        want = _naive(p, g, float(threshold[b]))
        got = (l2[b], l1[b], scores.precision[b], scores.recall[b], scores.fscore[b])
        np.testing.assert_allclose([float(v) for v in got], want, rtol=1e-10, atol=1e-12)


def test_chamfer_l1_gradient_matches_reference_and_is_finite_at_zero():
    pred, gt = _clouds(2, B=2, P1=20, P2=25)
    pred[0, 0] = gt[0, 3]  # one exact match: sqrt'(0) must not produce NaN
    ours = pred.clone().requires_grad_()
    chamfer_l1(ours, gt).sum().backward()
    ref = pred.clone().requires_grad_()
    total = 0
    for b in range(2):
        d_pred = ((ref[b, :, None] - gt[b, None]) ** 2).sum(-1)
        acc = d_pred.min(1).values
        comp = d_pred.min(0).values
        sqrt = lambda v: torch.where(v > 0, torch.sqrt(torch.where(v > 0, v, 1.0)), 0.0)
        total = total + 0.5 * (sqrt(acc).mean() + sqrt(comp).mean())
    total.backward()
    assert torch.isfinite(ours.grad).all()
    torch.testing.assert_close(ours.grad, ref.grad, **TOL)


def test_relative_threshold_uses_the_longest_valid_edge():
    gt = torch.tensor([[[0.0, 0, 0], [2, 1, 0.5], [100, 100, 100]]], dtype=torch.float64)
    torch.testing.assert_close(
        relative_threshold(gt, torch.tensor([2]), 0.01), torch.tensor([0.02], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="fraction"):
        relative_threshold(gt, fraction=0.0)


def test_shape_frame_centres_each_cloud_and_scales_by_gt():
    gt = torch.tensor([[[0.0, 0, 0], [4, 2, 1]]], dtype=torch.float64)
    pred = torch.tensor([[[10.0, 10, 10], [12, 11, 10], [99, 99, 99]]], dtype=torch.float64)
    p, g = to_eval_frame(pred, gt, "shape", pred_lengths=torch.tensor([2]))
    torch.testing.assert_close(g[0], torch.tensor([[-0.5, -0.25, -0.125], [0.5, 0.25, 0.125]], dtype=torch.float64))
    torch.testing.assert_close(p[0, :2], torch.tensor([[-0.25, -0.125, 0.0], [0.25, 0.125, 0.0]], dtype=torch.float64))
    for frame in ("metric", "canonical"):
        same_p, same_g = to_eval_frame(pred, gt, frame)
        assert same_p is pred and same_g is gt
    with pytest.raises(ValueError, match="unknown evaluation frame"):
        to_eval_frame(pred, gt, "camera")


def test_cloud_metrics_keys_and_values():
    pred, gt = _clouds(3)
    gt = gt * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    out = cloud_metrics(pred, gt, "metric")
    assert tuple(out) == CLOUD_METRIC_KEYS == ("cd_l2", "cd_l1", "f@1%", "f@2%")
    for b in range(3):
        edge = float((gt[b].amax(0) - gt[b].amin(0)).max())
        raw_l2, l1, _, _, f1 = _naive(pred[b].numpy(), gt[b].numpy(), 0.01 * edge)
        f2 = _naive(pred[b].numpy(), gt[b].numpy(), 0.02 * edge)[4]
        np.testing.assert_allclose(
            [float(out[k][b]) for k in CLOUD_METRIC_KEYS], [1000 * raw_l2, l1, f1, f2], rtol=1e-10, atol=1e-12
        )
    shape = cloud_metrics(pred, gt, "shape")
    p, g = to_eval_frame(pred, gt, "shape")
    torch.testing.assert_close(shape["cd_l2"], 1000 * chamfer_l2(p, g), **TOL)
    assert all(v.shape == (3,) for v in shape.values())


def test_shape_frame_is_invariant_to_scale_and_translation():
    pred, gt = _clouds(4)
    a = cloud_metrics(pred, gt, "shape")
    b = cloud_metrics(pred * 3.0 + 5.0, gt * 3.0 - 1.0, "shape")
    for key in CLOUD_METRIC_KEYS:
        torch.testing.assert_close(a[key], b[key], rtol=1e-9, atol=1e-12)
