"""Inference pruning calibrated on the validation split, once, at the end of training.

A decoder keeps, at every level, the voxels whose occupancy probability exceeds `prune_threshold`, and
at least `ceil(voxel_floor * r**2)` per sample (its highest-scoring). Which pair reconstructs best
depends on how confident the occupancy heads became, which depends on the training budget: after
minutes of CPU training the heads are under-confident and a higher floor (keep the top voxels) beats
any threshold; a long run may prefer the threshold. So the trainer tries a small grid on (a spread
subset of) the validation split with the best checkpoint's weights and writes the winner into that
checkpoint's config, where `Reconstructor.from_checkpoint`, `pointstn test` and `predict` read it.
The test split is never used. The table goes to the log and to `calibration.json` in the run folder.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from pointstn.config import ExperimentConfig
from pointstn.config.schema import ModelConfig
from pointstn.data.dataset import PreparedDataset
from pointstn.engine.validate import LOWER_IS_BETTER, validate

log = logging.getLogger("pointstn.train")

VOXEL_FLOORS = (0.5, 1.0, 2.0)
PRUNE_THRESHOLDS = (0.3, 0.5, 0.7)
MAX_IMAGES = 96  # validation images per candidate, spread evenly over the split (every k-th)


@dataclass(frozen=True)
class Calibration:
    """The chosen pair, its validation value, and every candidate's: [(voxel_floor, prune_threshold, value)]."""

    voxel_floor: float
    prune_threshold: float
    value: float | None
    table: list[tuple[float, float, float | None]]

    def apply(self, config: ExperimentConfig) -> ExperimentConfig:
        """`config` with the chosen pair as its decoder's inference pruning."""
        model = with_inference_pruning(config.model, voxel_floor=self.voxel_floor, prune_threshold=self.prune_threshold)
        return dataclasses.replace(config, model=model)


def same_network(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether two model sections describe the same network: equal but for the decoder's inference pair
    (`voxel_floor`, `prune_threshold`), which calibration writes into best.pt's config."""
    a, b = (with_inference_pruning(model, voxel_floor=0.0, prune_threshold=0.0) for model in (a, b))
    return a == b


def with_inference_pruning(model: ModelConfig, *, voxel_floor: float, prune_threshold: float) -> ModelConfig:
    """`model` with its decoder's inference pair replaced (the network itself is unchanged)."""
    decoder = dataclasses.replace(model.decoder, voxel_floor=voxel_floor, prune_threshold=prune_threshold)
    return dataclasses.replace(model, decoder=decoder)


def calibrate_pruning(model, dataset: PreparedDataset, config: ExperimentConfig) -> Calibration:
    """Try every (voxel_floor, prune_threshold) of the grid with `model`'s weights; the best by
    `train.best_metric` wins (ties: the first in grid order). The model's own pair is restored."""
    decoder = model.decoder
    before = (decoder.voxel_floor, decoder.prune_threshold)
    metric = config.train.best_metric
    table: list[tuple[float, float, float | None]] = []
    try:
        for floor in VOXEL_FLOORS:
            for threshold in PRUNE_THRESHOLDS:
                decoder.set_inference_pruning(voxel_floor=floor, prune_threshold=threshold)
                table.append((floor, threshold, validate(model, dataset, config, max_images=MAX_IMAGES).get(metric)))
    finally:
        decoder.set_inference_pruning(voxel_floor=before[0], prune_threshold=before[1])
    scored = [row for row in table if row[2] is not None]
    if not scored:
        return Calibration(voxel_floor=before[0], prune_threshold=before[1], value=None, table=table)
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    floor, threshold, value = min(scored, key=lambda row: sign * row[2])
    return Calibration(voxel_floor=floor, prune_threshold=threshold, value=value, table=table)
