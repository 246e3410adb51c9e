"""Memory suite: resident memory (RSS) stays flat while predicting many images and across training epochs.

- predict: a small, randomly initialised model built from `configs/smoke.yaml` is saved as a
  checkpoint and loaded with `Predictor.from_checkpoint`, as `pointstn predict` does; then a folder of
  distinct 128 x 128 PNG photos (1000, or 20 in quick mode) is predicted one image at a time, with
  RSS read after every image.
- train: the smoke config trains on a small procedural dataset (made once in
  `$POINTSTN_BENCH_DATA`, default `/tmp/pointstn-bench-data`) for many epochs (40, or 3 in quick
  mode) in one process, data loading in that process (`num_workers=0`), RSS read at every epoch start
  (validation and checkpoints every 10 epochs; RSS after the run ends is reported separately).

Reported per case: RSS at the start (after the first item, so one-off allocations are excluded), the
middle and the end, and the growth per item: the least-squares slope of RSS over the items after the
first 10 % (KB per image or per epoch). A leak shows as a steady positive slope; allocator noise as a
slope near zero with either sign.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from pathlib import Path

from pointstn.bench.header import section_header

NAME = "memory"
TITLE = "Memory: RSS over many predictions and over training epochs"
IMAGE_SIZE = 128
SKIP_FRACTION = 0.1  # items at the start left out of the slope (warm-up, caches filling)


def cases(quick: bool) -> list[dict]:
    return [
        {"case": "predict, one image at a time", "params": {"images": 20 if quick else 1000, "seed": 0},
         "rounds": 1, "contenders": [{"name": "predictor", "warmup": 1, "repeats": 1}]},
        {"case": "train, epochs in one process", "params": {"epochs": 3 if quick else 40, "quick": quick},
         "rounds": 1, "contenders": [{"name": "trainer", "warmup": 0, "repeats": 1}]},
    ]


def measure(contender: str, params: dict, *, warmup: int, repeats: int, memory) -> dict:
    if contender == "predictor":
        return measure_predict(images=int(params["images"]), seed=int(params["seed"]), warmup=warmup, memory=memory)
    if contender == "trainer":
        return measure_train(epochs=int(params["epochs"]), quick=bool(params["quick"]), memory=memory)
    raise ValueError(f"unknown memory contender {contender!r}")


def rss_summary(samples_mb: list[float]) -> dict:
    """Start/middle/end RSS (MB) and the growth per item (KB) of a series read once per item."""
    import numpy as np

    if len(samples_mb) < 2:
        raise ValueError("need at least two RSS samples")
    values = np.asarray(samples_mb, dtype=np.float64)
    first = min(int(len(values) * SKIP_FRACTION), len(values) - 2)
    tail = values[first:]
    slope_mb = float(np.polyfit(np.arange(len(tail), dtype=np.float64), tail, 1)[0])
    return {"items": len(values), "rss_start_mb": float(values[0]), "rss_middle_mb": float(values[len(values) // 2]),
            "rss_end_mb": float(values[-1]), "rss_max_mb": float(values.max()),
            "growth_kb_per_item": slope_mb * 1024.0, "growth_total_mb": float(values[-1] - values[first])}


def small_checkpoint(path: Path, *, seed: int) -> Path:
    """configs/smoke.yaml with random weights, saved like a trained checkpoint."""
    import torch

    from pointstn.config import ExperimentConfig, load_config
    from pointstn.engine.checkpoint import save_checkpoint
    from pointstn.models.build import build_model

    config = load_config(_repo_configs() / "smoke.yaml", ExperimentConfig)
    torch.manual_seed(seed)
    save_checkpoint(path, model=build_model(config), config=config, step=0)
    return path


def write_photos(folder: Path, *, count: int, seed: int) -> list[Path]:
    """`count` distinct PNGs: a random textured box on a plain background, different per image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        pixels = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 235, np.uint8)
        x0, y0 = rng.integers(16, 48, 2)
        x1, y1 = rng.integers(80, 112, 2)
        pixels[y0:y1, x0:x1] = rng.integers(0, 200, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
        paths.append(folder / f"photo_{index:04d}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def measure_predict(*, images: int, seed: int, warmup: int, memory) -> dict:
    from pointstn.inference.predictor import Predictor

    with tempfile.TemporaryDirectory(prefix="pointstn-bench-memory-") as tmp:
        folder = Path(tmp)
        photos = write_photos(folder, count=images, seed=seed)
        predictor = Predictor.from_checkpoint(small_checkpoint(folder / "smoke.pt", seed=seed))
        for path in photos[:warmup]:
            predictor.predict(str(path), num_points=1024)
        memory.mark_inputs_allocated()
        times, rss = [], []
        for path in photos:
            start = time.perf_counter()
            [result] = predictor.predict(str(path), num_points=1024)
            times.append(time.perf_counter() - start)
            rss.append(memory.current_mb())
            assert result.points_camera.shape[1] == 3
    return {"times_s": times, "unit": "s per image", "check": {**rss_summary(rss), "rss_mb": rss}}


def _repo_configs() -> Path:
    return Path(__file__).resolve().parents[2] / "configs"


def _dataset_root(quick: bool) -> Path:
    from pointstn.config import from_dict
    from pointstn.data.config import DatasetConfig
    from pointstn.data.format import MANIFEST_NAME, read_manifest
    from pointstn.data.generate import generate_dataset

    base = Path(os.environ.get("POINTSTN_BENCH_DATA", "/tmp/pointstn-bench-data"))
    root = base / ("memory-quick" if quick else "memory")
    if not ((root / MANIFEST_NAME).exists() and read_manifest(root)["complete"]):
        config = from_dict(DatasetConfig, {"name": root.name, "families": ["box"] if quick else ["box", "mug", "ball"],
                                           "objects_per_family": 3, "views_per_object": 4,
                                           "num_surface_points": 2048, "rig": {"image_size": 64}})
        generate_dataset(config, root, workers=1, resume=(root / MANIFEST_NAME).exists(), progress=False)
    return root


def measure_train(*, epochs: int, quick: bool, memory) -> dict:
    from pointstn.config import ExperimentConfig, load_config
    from pointstn.data.dataset import PreparedDataset
    from pointstn.engine.trainer import train

    root = _dataset_root(quick)
    batch = 2
    probe = PreparedDataset(root, split="train")
    steps_per_epoch = len(probe) // batch
    every = epochs if quick else max(1, epochs // 4)  # validate and save 4 times in a long run, once in quick mode
    overrides = [f"data.root={root}", "data.num_workers=0", f"train.batch_size={batch}", "data.num_gt_points=512",
                 "eval.num_gt_points=512", f"train.max_steps={epochs * steps_per_epoch}",
                 f"train.val_every={every * steps_per_epoch}", f"train.checkpoint_every={every * steps_per_epoch}",
                 f"train.log_every={steps_per_epoch}"]
    config = load_config(_repo_configs() / "smoke.yaml", ExperimentConfig, overrides)
    rss, stamps = [], []
    original = PreparedDataset.set_epoch

    def set_epoch(self, epoch: int) -> None:  # the trainer calls this at the start of every epoch
        if self.split == config.data.train_split:
            rss.append(memory.current_mb())
            stamps.append(time.perf_counter())
        original(self, epoch)

    memory.mark_inputs_allocated()
    PreparedDataset.set_epoch = set_epoch
    try:
        with tempfile.TemporaryDirectory(prefix="pointstn-bench-memory-") as tmp:
            train(config, run_dir=Path(tmp) / "run", progress=False)
            end = time.perf_counter()
    finally:
        PreparedDataset.set_epoch = original
    after = memory.current_mb()  # after the final validation, save and curve plot: not an epoch boundary
    times = [b - a for a, b in itertools.pairwise([*stamps, end])]  # one per epoch
    return {"times_s": times, "unit": "s per epoch",
            "check": {**rss_summary(rss), "rss_mb": rss, "rss_after_training_mb": after, "epochs": epochs,
                      "steps_per_epoch": steps_per_epoch}}


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        *section_header(report, versions=False),
        ("- predict: `Predictor.from_checkpoint` on a random-weight `configs/smoke.yaml` model, distinct 128 px PNGs "
         "one at a time; train: `configs/smoke.yaml`, batch 2, `num_workers=0`, RSS at every epoch start. Growth is "
         f"the least-squares slope of RSS after the first {SKIP_FRACTION:.0%} of the items."),
        "",
        "| case | items | RSS start MB | RSS middle MB | RSS end MB | growth per item | median time per item |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    if env["quick"]:
        lines.insert(2, "- **quick mode: tiny sizes, a smoke test, not a measurement**")
    for case in report["cases"]:
        for result in case["results"].values():
            check = result["check"]
            unit = "image" if case["case"].startswith("predict") else "epoch"
            lines.append(f"| {case['case']} | {check['items']} | {check['rss_start_mb']:.0f} | {check['rss_middle_mb']:.0f} "
                         f"| {check['rss_end_mb']:.0f} | {check['growth_kb_per_item']:+.1f} KB/{unit} "
                         f"| {result['timing']['median_s'] * 1000:.0f} ms |")
    lines.append("")
    return "\n".join(lines)
