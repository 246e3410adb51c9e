"""Predict suite: file-to-PLY latency per stage, at batch 1 and batch 16, as `pointstn predict` runs it.

Set-up in every worker process (not timed): the checkpoint -- a trained one given with
`pointstn benchmark --suite predict --checkpoint CKPT`, else a randomly initialised model of
`configs/base.yaml` (quick mode: `configs/smoke.yaml`) saved with `save_checkpoint` in a temporary
folder -- loaded with `Predictor.from_checkpoint` (its one-off load + warm-up time is reported
separately), and rendered-looking PNG photos (`photo`): a shaded ball-like blob on a plain, slightly
noisy background, 480 x 640 pixels like a phone snapshot scaled down, a distinct photo for every image.

A random checkpoint sets `model.decoder.prune_threshold=0`: a random decoder prunes almost every
voxel, so its fine cloud would be its floor only. With threshold 0 the decoder keeps its voxel budget
(`voxel_budget * r^2` voxels per level): the fine cloud is cut to 4096 points by farthest-point
sampling, and the decoder does at least the work of a trained one on a large object (an upper bound).
A trained checkpoint runs as stored (its calibrated pruning).

One timed repeat = one batch of images from their files to their outputs: `Predictor.predict(paths,
batch_size=B)` then `write_prediction` for each; the time per image is the repeat's time / B.
Contenders: `ply` (the PLY only) and `all-formats` (PLY, NPZ, PNG figure, HTML viewer, JSON). Stages
(`StageTimings`, per image): load (decode, validate, render the model's view), model (the batch's
forward, point selection, resampling, / B), geometry (pose, volumes, oriented box); export (the files)
is timed around `write_prediction`. Stage medians come from the last round; the total's from all rounds.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from pointstn.bench.header import section_header

NAME = "predict"
TITLE = "Predict: file-to-PLY latency per stage, batch 1 and batch 16"
STAGES = ("load", "model", "geometry", "export")
CONTENDERS = {"ply": ("ply",), "all-formats": ("ply", "npz", "png", "html", "json")}
PHOTO_HW = (480, 640)
NUM_POINTS = 4096
QUICK = {"config": "smoke.yaml", "photo_hw": (96, 128), "num_points": 512, "batches": (1, 2), "repeats": 2}
BATCHES = (1, 16)
REPEATS = {1: 8, 16: 2}  # timed batches per round


def cases(quick: bool, checkpoint: str | None = None) -> list[dict]:
    base = {
        "photo_hw": list(QUICK["photo_hw"] if quick else PHOTO_HW),
        "num_points": QUICK["num_points"] if quick else NUM_POINTS,
        "seed": 0,
    }
    if checkpoint is not None:
        base["checkpoint"] = str(Path(checkpoint).resolve())
    else:
        base.update(config=QUICK["config"] if quick else "base.yaml", overrides=["model.decoder.prune_threshold=0.0"])
    out = []
    for batch in QUICK["batches"] if quick else BATCHES:
        repeats = QUICK["repeats"] if quick else REPEATS[batch]
        out.append({
            "case": f"{base['photo_hw'][0]} x {base['photo_hw'][1]} PNG -> outputs, batch {batch}",
            "params": {**base, "batch_size": batch},
            "rounds": 1 if quick else 3,
            "contenders": [{"name": name, "warmup": 1, "repeats": repeats} for name in CONTENDERS],
        })  # fmt: skip
    return out


def photo(*, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8: a Lambert-shaded ellipsoid-like blob of a random colour on a light noisy background."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    cx, cy = width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6)
    rx, ry = width * rng.uniform(0.12, 0.22), height * rng.uniform(0.15, 0.28)
    x, y = (u - cx) / rx, (v - cy) / ry
    inside = x**2 + y**2 < 1.0
    z = np.sqrt(np.clip(1.0 - x**2 - y**2, 0.0, 1.0))
    light = np.array([-0.4, -0.5, 0.77]) / np.linalg.norm([-0.4, -0.5, 0.77])  # from the upper left
    shade = np.clip(x * light[0] + y * light[1] + z * light[2], 0.0, 1.0)  # Lambert, normal (x, y, z)
    colour = rng.uniform(40, 220, 3)
    background = rng.uniform(200, 245) + rng.normal(0.0, 4.0, (height, width, 1))
    pixels = np.where(inside[..., None], (0.25 + 0.75 * shade[..., None]) * colour, background)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def write_photos(folder: Path, *, count: int, height: int, width: int, seed: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        paths.append(folder / f"photo_{index:03d}.png")
        Image.fromarray(photo(height=height, width=width, rng=rng)).save(paths[-1])
    return paths


def random_checkpoint(path: Path, *, config_name: str, overrides: list[str], seed: int) -> Path:
    """A randomly initialised model of `configs/<config_name>` saved like a trained checkpoint."""
    import torch

    from pointstn.bench.model import load_experiment
    from pointstn.engine.checkpoint import save_checkpoint
    from pointstn.models.build import build_model

    config = load_experiment(config_name, overrides)
    torch.manual_seed(seed)
    save_checkpoint(path, model=build_model(config), config=config, step=0)
    return path


def measure(contender: str, params: dict, *, warmup: int, repeats: int, memory) -> dict:
    """Predict `repeats` photos one at a time after `warmup` ones (runs in the worker process)."""
    from pointstn.inference.outputs import write_prediction
    from pointstn.inference.predictor import Predictor

    if contender not in CONTENDERS:
        raise ValueError(f"unknown predict contender {contender!r}; valid choices: {', '.join(CONTENDERS)}")
    formats = CONTENDERS[contender]
    height, width = params["photo_hw"]
    batch = int(params.get("batch_size", 1))
    with tempfile.TemporaryDirectory(prefix="pointstn-bench-predict-") as tmp:
        folder = Path(tmp)
        photos = write_photos(folder, count=(warmup + repeats) * batch, height=height, width=width,
                              seed=int(params["seed"]))
        if "checkpoint" in params:
            checkpoint = Path(params["checkpoint"])
        else:
            checkpoint = random_checkpoint(folder / "model.pt", config_name=params["config"],
                                           overrides=list(params["overrides"]), seed=int(params["seed"]))
        memory.mark_inputs_allocated()
        predictor = Predictor.from_checkpoint(checkpoint)
        out = folder / "out"
        out.mkdir()
        run = {"checkpoint": {"path": str(checkpoint)}, "input": {"source": "benchmark"}}

        def one(paths: list[Path]) -> tuple[float, list[dict], object]:
            """One batch: (seconds per image, per-image stage seconds, the last (result, written))."""
            start = time.perf_counter()
            results = predictor.predict([str(p) for p in paths], num_points=int(params["num_points"]),
                                        batch_size=len(paths))
            per_image = []
            for path, result in zip(paths, results, strict=True):
                begin_export = time.perf_counter()
                written = write_prediction(result, directory=out, stem=path.stem, formats=formats, run=run)
                t = result.timings
                per_image.append({"load": t.load_s, "model": t.model_s, "geometry": t.geometry_s,
                                  "export": time.perf_counter() - begin_export})
            return (time.perf_counter() - start) / len(paths), per_image, (result, written)

        batches = [photos[i * batch:(i + 1) * batch] for i in range(warmup + repeats)]
        for paths in batches[:warmup]:
            one(paths)
        load_before = os.getloadavg()[0]
        times, stages = [], {s: [] for s in STAGES}
        for paths in batches[warmup:]:
            per_image_s, per_image, (result, written) = one(paths)
            times.append(per_image_s)
            for timings in per_image:
                for stage, value in timings.items():
                    stages[stage].append(value)
        return {
            "times_s": times,
            "check": {
                "stages_s": stages,
                "startup_s": predictor.load_s,
                "points": int(result.points_camera.shape[0]),
                "cloud_source": result.cloud_source,
                "resampling": result.resampling,
                "files": sorted(p.suffix.lstrip(".") for p in written.values()),
                "bytes_written": sum(p.stat().st_size for p in written.values()),
                "peak_rss_mb": memory.peak_mb(),
                "loadavg_before_after": [load_before, os.getloadavg()[0]],
            },
        }


def _model_line(report: dict) -> str:
    params = report["cases"][0]["params"]
    if "checkpoint" in params:
        return (f"- checkpoint: `{params['checkpoint']}` (trained; its stored config and calibrated pruning), "
                f"{params['num_points']} points per cloud")
    return (f"- checkpoint: a random-weight `configs/{params['config']}` model with `model.decoder.prune_threshold=0` (the "
            "decoder keeps its voxel budget, so the fine cloud exists and is cut by farthest-point sampling: at least "
            "a trained model's work)")


def _shares(case: dict, name: str) -> str:
    stages = stage_medians(case["results"][name]["check"])
    total = sum(stages.values()) or 1.0
    batch = case["params"].get("batch_size", 1)
    return f"batch {batch} {name}: " + ", ".join(f"{s} {100 * v / total:.0f}%" for s, v in stages.items())


def stage_medians(check: dict) -> dict[str, float]:
    """Median seconds of every stage in a result's check."""
    return {stage: float(np.median(check["stages_s"][stage])) for stage in STAGES}


def markdown(report: dict) -> str:
    """This suite's section: environment, per-stage medians per contender."""
    env = report["environment"]
    lines = [
        *section_header(report),
        _model_line(report),
        (
            "- one timed repeat: `Predictor.predict(paths, batch_size=B)` + `write_prediction` per image, B distinct "
            "shaded-blob PNG photos; total = the repeat's time / B (median over all rounds); stage columns: per-image "
            "medians from the last round (model = the batch's forward / B); startup = `Predictor.from_checkpoint` "
            "(load + one warm-up forward), once per process; each contender runs in a fresh process per round "
            "(rounds alternate the order); peak extra = peak RSS minus RSS before the checkpoint load."
        ),
    ]
    if env["quick"]:
        lines.append("- **quick mode: tiny sizes, a smoke test, not a measurement**")
    lines += [
        "",
        "| case | contender | total median (ms / image) | min .. max | n | images/s | load | model | geometry | export | startup (s) | points | files | peak extra MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]  # fmt: skip
    for case in report["cases"]:
        for name, result in case["results"].items():
            t, check = result["timing"], result["check"]
            stages = stage_medians(check)
            lines.append(
                f"| {case['case']} | {name} | {1000 * t['median_s']:.1f} | {1000 * t['min_s']:.1f} .. "
                f"{1000 * t['max_s']:.1f} | {t['n']} | {1 / t['median_s']:.2f} | "
                + " | ".join(f"{1000 * stages[s]:.1f}" for s in STAGES)
                + f" | {check['startup_s']:.2f} | {check['points']} ({check['cloud_source']}, {check['resampling']}) | "
                f"{', '.join(check['files'])} | {result['peak_extra_mb']:.0f} |"
            )
    lines += ["", "Stage columns are medians in ms per image; their shares of the total: "
              + "; ".join(_shares(case, name) for case in report["cases"] for name in case["results"]) + "."]
    return "\n".join(lines) + "\n"
