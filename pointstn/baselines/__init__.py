"""Baselines reported next to every result (DESIGN.md section 3).

- `pointstn.baselines.retrieval.RetrievalBaseline`: nearest training image under a fixed, training-free
  embedding (`pointstn.baselines.embedding`) -> that sample's ground-truth cloud in its own pose
  (Tatarchenko et al. 2019).
- `pointstn.baselines.oracle.OracleNN`: the training shape closest to the test shape in the shape frame,
  posed with the test sample's true transform (the upper bound of retrieval; it reads ground truth).

Both return a `BaselinePrediction`, which has the frames the model's output has, so the same evaluation
code scores them in the shape, metric and canonical frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pointstn.models.types import SimilarityTransform


@dataclass(frozen=True)
class BaselinePrediction:
    """One retrieved cloud per query (B = queries, N = points per cloud).

    points: (B, N, 3) normalized canonical frame (the retrieved object's canonical cloud divided by
        its longest bounding-box edge).
    points_camera: (B, N, 3) camera frame, metres (`transform.apply(points)` up to float rounding).
    transform: the pose the cloud is placed with (rotation (B, 3, 3), scale (B,) = longest edge in
        metres, translation (B, 3)).
    indices: (B,) int64: the retrieved training item (`RetrievalBaseline`: an index into the training
        dataset) or training object (`OracleNN`: an index into the training split's objects).
    """

    points: torch.Tensor
    points_camera: torch.Tensor
    transform: SimilarityTransform
    indices: torch.Tensor


__all__ = ["BaselinePrediction"]
