"""Small frozen types the model stages exchange (shapes in the docstrings; B = batch)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class RotationHypotheses:
    """The anchor head's output: scores `logits` (B, K), the refined rotation of every anchor `rotations`
    (B, K, 3, 3) and the fixed `anchors` themselves (K, 3, 3)."""

    logits: Tensor
    rotations: Tensor
    anchors: Tensor


@dataclass(frozen=True)
class SimilarityTransform:
    """canonical -> camera: x_cam = scale * rotation @ p + translation.

    rotation: (B, 3, 3) proper rotations; scale: (B,) > 0, metres per normalized canonical unit
    (the object's longest bounding-box edge); translation: (B, 3) metres (the bbox centre in the
    OpenCV camera frame).
    """

    rotation: Tensor
    scale: Tensor
    translation: Tensor

    def apply(self, points: Tensor) -> Tensor:
        """(B, N, 3) normalized canonical points -> (B, N, 3) camera-frame points (metres)."""
        return self.scale[:, None, None] * points @ self.rotation.transpose(1, 2) + self.translation[:, None, :]

    def inverse_apply(self, points: Tensor) -> Tensor:
        """(B, N, 3) camera-frame points -> (B, N, 3) normalized canonical points."""
        return (points - self.translation[:, None, :]) @ self.rotation / self.scale[:, None, None]

    def detach(self) -> SimilarityTransform:
        return SimilarityTransform(self.rotation.detach(), self.scale.detach(), self.translation.detach())

    @staticmethod
    def stack(rotation: Tensor, scale: Tensor, translation: Tensor) -> SimilarityTransform:
        """Validated constructor: shapes (B,3,3), (B,), (B,3) with one batch size."""
        batch = rotation.shape[0]
        if rotation.shape != (batch, 3, 3) or scale.shape != (batch,) or translation.shape != (batch, 3):
            raise ValueError(
                f"SimilarityTransform needs (B,3,3), (B,), (B,3); got {tuple(rotation.shape)}, "
                f"{tuple(scale.shape)}, {tuple(translation.shape)}"
            )
        return SimilarityTransform(rotation, scale, translation)


@dataclass(frozen=True)
class BackboneFeatures:
    """maps: per stage (B, C_i, H_i, W_i), finest first; pooled: (B, C_last * g**2) the last map
    average-pooled to g x g cells and flattened (g = the backbone's global_grid; 1 = the global mean)."""

    maps: tuple[Tensor, ...]
    pooled: Tensor


def identity_transform(batch: int, *, dtype: torch.dtype = torch.float32) -> SimilarityTransform:
    """R = I, s = 1, t = 0 for `batch` samples (tests and the canonical-frame evaluation)."""
    return SimilarityTransform(
        torch.eye(3, dtype=dtype).expand(batch, 3, 3).clone(), torch.ones(batch, dtype=dtype), torch.zeros(batch, 3, dtype=dtype)
    )
