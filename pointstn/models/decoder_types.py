"""What the voxel decoders (sparse and dense U-Net) return: the output cloud and per-level occupancy.

Both decoders (`pointstn.models.sparse_unet`, `pointstn.models.dense_unet`) return a `DecoderOutput`;
its `levels` feed the per-level occupancy BCE, its `points`/`lengths` the Chamfer terms.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class LevelOutput:
    """The occupancy prediction of one decoder level (one resolution).

    coords: (V, 4) int32 `[b, i, j, k]` voxels the level scored (its candidates), i along x, j along
        y, k along z, on a grid of `resolution` cells per axis covering [-0.5, 0.5]^3.
    logits: (V,) occupancy logits, row v for `coords[v]`; differentiable.
    targets: (V,) float 0/1 ground-truth occupancy of `coords` (same dtype as `logits`), or None
        when the decoder ran without ground truth.
    resolution: R of this level.
    kept: (V,) bool, the candidates the level kept (the sparse decoder), or None where the level
        does not prune (the dense decoder's coarse levels, which only predict).
    """

    coords: Tensor
    logits: Tensor
    targets: Tensor | None
    resolution: int
    kept: Tensor | None = None


@dataclass(frozen=True)
class DecoderOutput:
    """The decoded cloud of a batch and every level's occupancy.

    points: (B, P, 3) output points in the normalized canonical frame, padded with zeros; P is the
        largest valid count in the batch.
    lengths: (B,) int64 valid points per sample (>= 1: every sample keeps at least one voxel).
    levels: one `LevelOutput` per decoder level, finest first (`levels[l].resolution ==
        resolution // 2**l`, the order of `OccupancyPyramid.levels`).
    """

    points: Tensor
    lengths: Tensor
    levels: tuple[LevelOutput, ...]
