"""Validation during training: the model on the validation split, shape-frame metrics averaged."""

from __future__ import annotations

import torch

from pointstn.config import ExperimentConfig
from pointstn.data.dataset import PreparedDataset
from pointstn.engine.evaluate import MetricTable, Prediction, sample_metrics

VALIDATION_BATCH = 16
LOWER_IS_BETTER = ("cd_l2", "cd_l1", "vol_rel_err")  # metrics where a smaller value is better


def model_prediction(model, images: torch.Tensor) -> Prediction:
    """Run the reconstructor (eval mode, no gradients) and keep what evaluation needs."""
    with torch.no_grad():
        out = model(images)
    return Prediction(points=out.points, lengths=out.lengths, points_camera=out.points_camera,
                      rotation=out.transform.rotation)


def validate(model, dataset: PreparedDataset, config: ExperimentConfig, *,
             max_images: int | None = None) -> dict[str, float | None]:
    """Mean shape-frame metrics over the split (and vol_rel_err when it selects the best checkpoint);
    `max_images`: at most this many, taken at even strides (every object of the split still shows)."""
    was_training = model.training
    model.eval()
    table = MetricTable()
    items = dataset
    if max_images is not None:
        items = torch.utils.data.Subset(dataset, range(0, len(dataset), max(1, -(-len(dataset) // max_images))))
    loader = torch.utils.data.DataLoader(items, batch_size=VALIDATION_BATCH, shuffle=False, num_workers=0)
    device = next(model.parameters()).device
    for batch in loader:
        batch = type(batch)(*(t.to(device) for t in batch))
        pred = model_prediction(model, batch.image)
        records = [dataset.records[int(i)] for i in batch.object_index]
        values = sample_metrics(pred, batch, frames=("shape",), num_pred_points=config.eval.num_pred_points,
                                resample_how=config.eval.resample, symmetries=[r["symmetry"] for r in records],
                                volumes=config.train.best_metric == "vol_rel_err")
        table.add(values, families=[r["family"] for r in records],
                  bins=[dataset.bins[int(b)] for b in batch.bin_index], object_ids=[r["object_id"] for r in records])
    model.train(was_training)
    overall = table.summary()["overall"]
    return {**overall.get("shape", {}), **{k: v for k, v in overall.get("metric", {}).items() if k == "vol_rel_err"}}
