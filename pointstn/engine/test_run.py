"""`pointstn test`: the model and the baselines on one split, through the same metrics, as JSON,
a Markdown table and a figure of sample reconstructions next to the ground truth.

JSON shape (stable, docs/METRICS.md): {"methods": {NAME: {FRAME: {METRIC: value}}} (means over samples),
"medians": {NAME: {FRAME: {METRIC: value}}} (medians: robust for vol_rel_err), "per_family": {NAME: {FAMILY: {"n_samples": n, FRAME: {METRIC: value}}}}, "per_view_bin": {NAME: {BIN: ...}},
"n_samples": N, "dataset": path, "split": name, "conventions": {...}}.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pointstn import __version__
from pointstn.config import ExperimentConfig
from pointstn.data.dataset import PreparedDataset
from pointstn.engine.evaluate import MetricTable, Prediction, evaluation_points, sample_metrics
from pointstn.engine.validate import model_prediction
from pointstn.io.atomic import atomic_write_text
from pointstn.io.figures import clouds_figure

log = logging.getLogger("pointstn.test")
BASELINES = ("retrieval", "oracle_nn", "psgn")
CONVENTIONS = {
    "cd_l2": "PyTorch3D chamfer_distance defaults (squared, mean per cloud, directions summed) x1000",
    "cd_l1": "OccNet Chamfer-L1: unsquared, 0.5 * (accuracy + completeness)",
    "f@1%": "F-score, threshold 1% of the ground truth's longest bounding-box edge (unsquared)",
    "f@2%": "F-score, threshold 2% of the ground truth's longest bounding-box edge (unsquared)",
    "vol_rel_err": "|V_pred - V_gt| / V_gt, solid volume in m^3 (under the metric frame)",
    "rot_err_deg": "geodesic rotation error, objects with a unique rotation only (under the metric frame)",
}


def _baseline_prediction(result) -> Prediction:
    return Prediction(points=result.points, lengths=torch.full((result.points.shape[0],), result.points.shape[1]),
                      points_camera=result.points_camera, rotation=result.transform.rotation)


def build_methods(config: ExperimentConfig, model, *, baselines: tuple[str, ...], psgn_model=None,
                  train_root: Path) -> dict[str, Callable[[Any], Prediction]]:
    """name -> function(batch) -> Prediction, for the model and each requested baseline."""
    methods: dict[str, Callable[[Any], Prediction]] = {"pointstn": lambda batch: model_prediction(model, batch.image)}
    if "retrieval" in baselines or "oracle_nn" in baselines:
        train_set = PreparedDataset(train_root, split=config.data.train_split, image_size=config.data.image_size,
                                    num_points=evaluation_points(config, train_root))
    if "retrieval" in baselines:
        from pointstn.baselines.retrieval import RetrievalBaseline

        retrieval = RetrievalBaseline().fit(train_set)
        methods["retrieval"] = lambda batch: _baseline_prediction(retrieval.predict(batch.image))
    if "oracle_nn" in baselines:
        from pointstn.baselines.oracle import OracleNN

        oracle = OracleNN(training_poses=config.eval.oracle_view_poses).fit(train_set)
        methods["oracle_nn"] = lambda batch: _baseline_prediction(oracle.predict(batch))
    if "psgn" in baselines and psgn_model is not None:
        methods["psgn"] = lambda batch: model_prediction(psgn_model, batch.image)
    return methods


def run_test(config: ExperimentConfig, methods: dict[str, Callable[[Any], Prediction]], dataset: PreparedDataset,
             *, out_json: Path, figure_samples: int = 6, volumes: bool = True) -> dict[str, Any]:
    """Evaluate every method on `dataset`; writes out_json, its .md table and a .png figure beside it."""
    from tqdm import tqdm

    tables = {name: MetricTable() for name in methods}
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=False, num_workers=0)
    figure_rows = []
    shown = {round(i * (len(dataset) - 1) / max(1, figure_samples - 1)) for i in range(figure_samples)}
    offset = 0
    for batch in tqdm(loader, desc="evaluate", unit="batch"):
        records = [dataset.records[int(i)] for i in batch.object_index]
        predictions = {}
        for name, method in methods.items():
            pred = predictions[name] = method(batch)
            values = sample_metrics(pred, batch, frames=config.eval.frames, num_pred_points=config.eval.num_pred_points,
                                    resample_how=config.eval.resample, symmetries=[r["symmetry"] for r in records],
                                    volumes=volumes)
            tables[name].add(values, families=[r["family"] for r in records],
                             bins=[dataset.bins[int(b)] for b in batch.bin_index],
                             object_ids=[r["object_id"] for r in records])
        for i in [i for i in range(len(batch.image)) if offset + i in shown]:
            clouds = {"ground truth": batch.points_camera[i].numpy()}
            for name, pred in predictions.items():
                clouds[name] = pred.points_camera[i, : int(pred.lengths[i])].detach().numpy()
            image = (batch.image[i].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            figure_rows.append((image, clouds, f"{records[i]['object_id']} ({dataset.bins[int(batch.bin_index[i])]})"))
        offset += len(batch.image)
    summaries = {name: table.summary() for name, table in tables.items()}
    report = {
        "methods": {name: s["overall"] for name, s in summaries.items()},
        "medians": {name: s["median"] for name, s in summaries.items()},
        "per_family": {name: s["per_family"] for name, s in summaries.items()},
        "per_view_bin": {name: s["per_view_bin"] for name, s in summaries.items()},
        "n_samples": len(dataset),
        "dataset": str(dataset.root),
        "split": dataset.split,
        "pointstn_version": __version__,
        "conventions": CONVENTIONS,
    }
    out_json = Path(out_json)
    atomic_write_text(out_json, json.dumps(report, indent=1) + "\n")
    atomic_write_text(out_json.with_suffix(".md"), markdown_table(report))
    if figure_rows:
        clouds_figure(figure_rows, out_json.with_suffix(".png"))
    return report


def _fmt(value: float | None, name: str) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if name in ("cd_l2", "rot_err_deg") else f"{value:.4f}"


def markdown_table(report: dict[str, Any]) -> str:
    """A readable summary: one table per frame (overall), then extreme vs canonical views."""
    lines = [f"# Evaluation on {report['dataset']} (split {report['split']}, {report['n_samples']} images)", ""]
    for frame in ("shape", "metric", "canonical"):
        metrics = sorted({m for method in report["methods"].values() for m in method.get(frame, {})},
                         key=lambda m: list(CONVENTIONS).index(m))
        if not metrics:
            continue
        lines += [f"## {frame} frame", "", "| method | " + " | ".join(metrics) + " |",
                  "| --- |" + " --- |" * len(metrics)]
        for name, frames in report["methods"].items():
            lines.append(f"| {name} | " + " | ".join(_fmt(frames.get(frame, {}).get(m), m) for m in metrics) + " |")
        lines.append("")
    lines += ["## f@1% (shape frame) per viewpoint bin", "", "| method | " + " | ".join(
        sorted({b for bins in report["per_view_bin"].values() for b in bins})) + " |"]
    bins = sorted({b for bins in report["per_view_bin"].values() for b in bins})
    lines.append("| --- |" + " --- |" * len(bins))
    for name, per_bin in report["per_view_bin"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(per_bin.get(b, {}).get("shape", {}).get("f@1%"), "f@1%")
                                                  for b in bins) + " |")
    medians = {name: frames.get("metric", {}).get("vol_rel_err") for name, frames in report.get("medians", {}).items()}
    if any(v is not None for v in medians.values()):
        lines += ["", "## median vol_rel_err (metric frame)", "", "| method | vol_rel_err |", "| --- | --- |"]
        lines += [f"| {name} | {_fmt(value, 'vol_rel_err')} |" for name, value in medians.items()]
    lines += ["", "Conventions: " + "; ".join(f"`{k}`: {v}" for k, v in CONVENTIONS.items()), ""]
    return "\n".join(lines)
