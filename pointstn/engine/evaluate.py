"""Evaluation: every metric of DESIGN.md section 3, per sample, then overall / per family / per view bin.

Any method (the model, a baseline) is evaluated through the same `Prediction` type:
- `shape` and `metric` frames compare the camera-frame clouds (`to_eval_frame`);
- `canonical` compares the normalized canonical clouds (longest edge 1);
- `vol_rel_err` (m^3, solid volume of the predicted camera-frame cloud vs the dataset's `volume_target`)
  and `rot_err_deg` (only objects whose rotation is unique) do not depend on a frame and are reported
  under the `metric` frame;
- predictions are resampled to `num_pred_points` (farthest-point or random), ground truth keeps the
  dataset's surface samples.

Every evaluation loads `evaluation_points` surface samples per object -- the ground truth of `pointstn
test`, of validation during training and of the pruning calibration, and the clouds the retrieval and
oracle baselines return -- so validation measures what the test reports and every method is resampled
from a cloud of at least `num_pred_points` points.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pointstn.ops.metrics import cloud_metrics
from pointstn.ops.rotation import geodesic_angle
from pointstn.ops.sampling import PointSample, farthest_point_sample, random_resample
from pointstn.ops.volume import solid_volume

UNIQUE_ROTATION = ("none", "mirror")


def evaluation_points(config, root) -> int:
    """Surface samples per object that evaluations load from the prepared dataset at `root`:
    `eval.num_gt_points`, or all that the dataset stores if it stores fewer (never
    `data.num_gt_points`, the training targets' count)."""
    from pointstn.data.format import read_manifest

    return min(config.eval.num_gt_points, int(read_manifest(root)["config"]["num_surface_points"]))
FRAME_METRICS = ("cd_l2", "cd_l1", "f@1%", "f@2%")


@dataclass(frozen=True)
class Prediction:
    """One method's output for a batch. points: (B, P, 3) normalized canonical; lengths: (B,);
    points_camera: (B, P, 3) metres; rotation: (B, 3, 3) canonical -> camera."""

    points: Tensor
    lengths: Tensor
    points_camera: Tensor
    rotation: Tensor


def resample(points: Tensor, lengths: Tensor, count: int, how: str, seed: int = 0) -> PointSample:
    if how == "fps":
        return farthest_point_sample(points, lengths, K=count)
    return random_resample(points, lengths, K=count, generator=torch.Generator().manual_seed(seed))


def gather_points(points: Tensor, chosen: PointSample) -> Tensor:
    """(B, K, 3) rows `chosen.idx` of `points` (zeros in unused slots), e.g. the same points in another frame."""
    index = chosen.idx.clamp(min=0)[..., None].expand(-1, -1, points.shape[-1])
    return torch.gather(points, 1, index) * (chosen.idx >= 0)[..., None]


def sample_metrics(pred: Prediction, batch, *, frames: Iterable[str], num_pred_points: int, resample_how: str,
                   symmetries: list[str], volumes: bool = True) -> dict[str, dict[str, Tensor]]:
    """{frame: {metric: (B,) values}} for one batch (NaN where a metric does not apply)."""
    # points_camera is the canonical cloud under a similarity transform: choose the points once, in the
    # camera frame, and take the same points from the canonical cloud
    chosen = resample(pred.points_camera.detach().float(), pred.lengths, num_pred_points, resample_how)
    cam, lengths = chosen.points, chosen.lengths
    canonical, canonical_lengths = gather_points(pred.points.detach().float(), chosen), chosen.lengths
    size = batch.extents.max(dim=1).values
    out: dict[str, dict[str, Tensor]] = {}
    for frame in frames:
        if frame == "canonical":
            gt = batch.points / size[:, None, None]
            out[frame] = cloud_metrics(canonical, gt, "canonical", canonical_lengths)
        else:
            out[frame] = cloud_metrics(cam, batch.points_camera, frame, lengths)
    metric = out.setdefault("metric", {})
    angle = torch.rad2deg(geodesic_angle(pred.rotation.detach().double(), batch.rotation.double())).float()
    unique = torch.tensor([s in UNIQUE_ROTATION for s in symmetries])
    metric["rot_err_deg"] = torch.where(unique, angle, torch.full_like(angle, math.nan))
    if volumes:
        predicted = torch.as_tensor(solid_volume(cam, lengths).volume, dtype=torch.float32)
        truth = batch.volume
        metric["vol_rel_err"] = torch.where(torch.isfinite(truth), (predicted - truth).abs() / truth,
                                            torch.full_like(truth, math.nan))
    return out


class MetricTable:
    """Accumulates per-sample rows; `summary()` gives the documented JSON shape for one method."""

    def __init__(self):
        self.rows: list[dict[str, Any]] = []

    def add(self, values: dict[str, dict[str, Tensor]], *, families: list[str], bins: list[str],
            object_ids: list[str]) -> None:
        for i, (family, view_bin, object_id) in enumerate(zip(families, bins, object_ids, strict=True)):
            row = {"family": family, "bin": view_bin, "object": object_id}
            for frame, metrics in values.items():
                for name, tensor in metrics.items():
                    row[f"{frame}/{name}"] = float(tensor[i])
            self.rows.append(row)

    @staticmethod
    def _reduce(rows: list[dict[str, Any]], reduce) -> dict[str, dict[str, float | None]]:
        """{frame: {metric: reduce(finite values)}} over `rows` (None where a metric has no finite value)."""
        result: dict[str, dict[str, float | None]] = {}
        for key in sorted({k for r in rows for k in r if "/" in k}):
            frame, name = key.split("/", 1)
            values = [r[key] for r in rows if key in r and math.isfinite(r[key])]
            result.setdefault(frame, {})[name] = reduce(values) if values else None
        return result

    @classmethod
    def _mean(cls, rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
        return cls._reduce(rows, lambda values: sum(values) / len(values))

    @classmethod
    def _median(cls, rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
        return cls._reduce(rows, statistics.median)

    def summary(self) -> dict[str, Any]:
        def grouped(field: str) -> dict[str, Any]:
            groups: dict[str, list] = {}
            for row in self.rows:
                groups.setdefault(row[field], []).append(row)
            return {name: {"n_samples": len(rows), **self._mean(rows)} for name, rows in sorted(groups.items())}

        extreme = [r for r in self.rows if r["bin"] != "canonical"]
        bins = grouped("bin")
        if extreme:
            bins["extreme"] = {"n_samples": len(extreme), **self._mean(extreme)}
        return {"overall": self._mean(self.rows), "median": self._median(self.rows), "per_family": grouped("family"),
                "per_view_bin": bins, "n_samples": len(self.rows)}
