"""Point-cloud reconstruction metrics (DESIGN.md section 3), per sample, lengths-aware.

Every function names its convention, because the literature mixes them:

- `chamfer_l2`: PyTorch3D `chamfer_distance` defaults: *squared* Euclidean nearest-neighbour
  distances, averaged over each cloud, the two directions summed. Raw value; the reported `cd_l2`
  is that x1000 (`report_cd_l2`).
- `chamfer_l1`: OccNet "Chamfer-L1": *unsquared* Euclidean distances,
  0.5 * (mean accuracy (pred -> gt) + mean completeness (gt -> pred)).
- `fscore`: Tatarchenko et al. 2019: precision = fraction of predicted points closer than the
  threshold to the ground truth, recall = fraction of ground-truth points closer than the threshold
  to the prediction (unsquared distances, strict `<`), F = 2PR / (P + R) (0 when P + R = 0).
- `relative_threshold`: fraction x the ground truth's longest axis-aligned bounding-box edge.
- `to_eval_frame`: "shape" (both clouds centred at their own bounding-box centre and divided by the
  ground truth's longest edge), "metric" (unchanged, metres) or "canonical" (unchanged; only
  meaningful for aligned data).

Clouds are padded (B, P, 3) tensors with optional lengths (B,); a cloud with no valid point counts
as having mean 0 (as PyTorch3D's mean divides by max(length, 1)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pointstn.ops.bbox import bbox, longest_edge
from pointstn.ops.chamfer import chamfer_distance
from pointstn.ops.knn import checked_lengths

EVAL_FRAMES = ("shape", "metric", "canonical")
CLOUD_METRIC_KEYS = ("cd_l2", "cd_l1", "f@1%", "f@2%")


@dataclass(frozen=True)
class NearestDistances:
    """Unsquared Euclidean nearest-neighbour distances, 0 at padded points.

    pred_to_gt: (B, P1) from each predicted point to the ground truth (accuracy terms).
    gt_to_pred: (B, P2) from each ground-truth point to the prediction (completeness terms).
    pred_to_gt_sq, gt_to_pred_sq: the same, squared (as computed, not re-squared).
    pred_lengths, gt_lengths: (B,) int64 numbers of valid points.
    """

    pred_to_gt: torch.Tensor
    gt_to_pred: torch.Tensor
    pred_to_gt_sq: torch.Tensor
    gt_to_pred_sq: torch.Tensor
    pred_lengths: torch.Tensor
    gt_lengths: torch.Tensor


@dataclass(frozen=True)
class FScore:
    """Per-sample F-score at a distance threshold: precision, recall, fscore, each (B,) in [0, 1]."""

    precision: torch.Tensor
    recall: torch.Tensor
    fscore: torch.Tensor


def nearest_distances(
    pred: torch.Tensor,
    gt: torch.Tensor,
    pred_lengths: torch.Tensor | None = None,
    gt_lengths: torch.Tensor | None = None,
) -> NearestDistances:
    """Both directions' unsquared nearest distances for pred (B, P1, 3) and gt (B, P2, 3)."""
    pred_lengths = checked_lengths(pred_lengths, pred, "pred_lengths")
    gt_lengths = checked_lengths(gt_lengths, gt, "gt_lengths")
    (sq_pred, sq_gt), _ = chamfer_distance(
        pred, gt, pred_lengths, gt_lengths, batch_reduction=None, point_reduction=None
    )
    return NearestDistances(_safe_sqrt(sq_pred), _safe_sqrt(sq_gt), sq_pred, sq_gt, pred_lengths, gt_lengths)


def chamfer_l2(
    pred: torch.Tensor,
    gt: torch.Tensor,
    pred_lengths: torch.Tensor | None = None,
    gt_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) raw PyTorch3D-default Chamfer: squared distances, mean per cloud, directions summed."""
    loss, _ = chamfer_distance(pred, gt, pred_lengths, gt_lengths, batch_reduction=None)
    return loss


def report_cd_l2(raw: torch.Tensor) -> torch.Tensor:
    """The reported `cd_l2`: the raw squared-distance Chamfer (`chamfer_l2`) x 1000."""
    return raw * 1000.0


def chamfer_l1(
    pred: torch.Tensor,
    gt: torch.Tensor,
    pred_lengths: torch.Tensor | None = None,
    gt_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) OccNet Chamfer-L1: 0.5 * (mean accuracy + mean completeness), unsquared Euclidean."""
    return _chamfer_l1(nearest_distances(pred, gt, pred_lengths, gt_lengths))


def fscore(
    pred: torch.Tensor,
    gt: torch.Tensor,
    threshold: torch.Tensor | float,
    pred_lengths: torch.Tensor | None = None,
    gt_lengths: torch.Tensor | None = None,
) -> FScore:
    """F-score with unsquared distances below `threshold` (a float, or (B,) one per sample)."""
    return _fscore(nearest_distances(pred, gt, pred_lengths, gt_lengths), threshold)


def relative_threshold(gt: torch.Tensor, lengths: torch.Tensor | None = None, fraction: float = 0.01) -> torch.Tensor:
    """(B,) `fraction` x the longest axis-aligned bounding-box edge of each ground-truth cloud."""
    if not fraction > 0:
        raise ValueError(f"fraction must be positive, got {fraction}")
    return fraction * longest_edge(gt, lengths)


def to_eval_frame(
    pred: torch.Tensor,
    gt: torch.Tensor,
    frame: str,
    pred_lengths: torch.Tensor | None = None,
    gt_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, gt) expressed in the evaluation frame `frame` (padding rows transformed alike).

    "shape": each cloud centred at its own bounding-box centre, both divided by the ground truth's
    longest bounding-box edge (viewer-centred shape). "metric" and "canonical": unchanged.
    """
    if frame not in EVAL_FRAMES:
        raise ValueError(f"unknown evaluation frame {frame!r}; valid choices: {', '.join(EVAL_FRAMES)}")
    if frame != "shape":
        return pred, gt
    gt_box = bbox(gt, gt_lengths)
    scale = gt_box.extents.amax(dim=-1)
    if bool((scale <= 0).any()):
        bad = torch.nonzero(scale <= 0).flatten().tolist()
        raise ValueError(f"the 'shape' frame divides by the ground truth's longest edge, which is 0 for clouds {bad}")
    pred_centre = bbox(pred, pred_lengths).center
    pred = (pred - pred_centre[:, None, :]) / scale[:, None, None]
    gt = (gt - gt_box.center[:, None, :]) / scale[:, None, None]
    return pred, gt


def cloud_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    frame: str,
    pred_lengths: torch.Tensor | None = None,
    gt_lengths: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The per-sample table metrics in evaluation frame `frame`, from one neighbour search.

    Returns a dict with exactly the keys `CLOUD_METRIC_KEYS`, each (B,): "cd_l2" (x1000, squared),
    "cd_l1" (OccNet, unsquared), "f@1%" and "f@2%" (thresholds 1% / 2% of the ground truth's longest
    edge measured in that frame).
    """
    pred, gt = to_eval_frame(pred, gt, frame, pred_lengths, gt_lengths)
    near = nearest_distances(pred, gt, pred_lengths, gt_lengths)
    edge = longest_edge(gt, near.gt_lengths)
    return {
        "cd_l2": report_cd_l2(_chamfer_l2_from(near)),
        "cd_l1": _chamfer_l1(near),
        "f@1%": _fscore(near, 0.01 * edge).fscore,
        "f@2%": _fscore(near, 0.02 * edge).fscore,
    }


def _safe_sqrt(squared: torch.Tensor) -> torch.Tensor:
    """sqrt with a zero (not NaN) gradient at exactly 0."""
    positive = squared > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, squared, 1.0)), 0.0)


def _mean(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return values.sum(1) / lengths.clamp(min=1)


def _chamfer_l1(near: NearestDistances) -> torch.Tensor:
    return 0.5 * (_mean(near.pred_to_gt, near.pred_lengths) + _mean(near.gt_to_pred, near.gt_lengths))


def _chamfer_l2_from(near: NearestDistances) -> torch.Tensor:
    return _mean(near.pred_to_gt_sq, near.pred_lengths) + _mean(near.gt_to_pred_sq, near.gt_lengths)


def _fscore(near: NearestDistances, threshold: torch.Tensor | float) -> FScore:
    B = near.pred_to_gt.shape[0]
    threshold = torch.as_tensor(threshold, dtype=near.pred_to_gt.dtype, device=near.pred_to_gt.device)
    if threshold.ndim == 0:
        threshold = threshold.expand(B)
    if threshold.shape != (B,):
        raise ValueError(f"threshold must be a float or a (B,) tensor with B={B}; got shape {tuple(threshold.shape)}")
    precision = _fraction_within(near.pred_to_gt, near.pred_lengths, threshold)
    recall = _fraction_within(near.gt_to_pred, near.gt_lengths, threshold)
    total = precision + recall
    f = torch.where(total > 0, 2 * precision * recall / torch.where(total > 0, total, 1.0), 0.0)
    return FScore(precision=precision, recall=recall, fscore=f)


def _fraction_within(dists: torch.Tensor, lengths: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    P = dists.shape[1]
    valid = torch.arange(P, device=dists.device).view(1, P) < lengths.view(-1, 1)
    hits = ((dists < threshold.view(-1, 1)) & valid).sum(1)
    return hits.to(dists.dtype) / lengths.clamp(min=1).to(dists.dtype)


__all__ = [
    "CLOUD_METRIC_KEYS",
    "EVAL_FRAMES",
    "FScore",
    "NearestDistances",
    "chamfer_l1",
    "chamfer_l2",
    "cloud_metrics",
    "fscore",
    "nearest_distances",
    "relative_threshold",
    "report_cd_l2",
    "to_eval_frame",
]
