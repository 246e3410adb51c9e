"""Data suite: rendering throughput (views/s, one process) and loader throughput (images/s).

The loader cases read a small procedural dataset that the suite makes once in a cache folder
(`$POINTSTN_BENCH_DATA`, default `/tmp/pointstn-bench-data`); batches of 16 views with training
augmentation and 2048 ground-truth points, as `configs/demo.yaml` trains.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pointstn.bench.header import section_header

NAME = "data"
TITLE = "Data: offscreen rendering and the training loader"
BATCH = 16


def _dataset_root(quick: bool) -> Path:
    from pointstn.config import from_dict
    from pointstn.data.config import DatasetConfig
    from pointstn.data.format import MANIFEST_NAME, read_manifest
    from pointstn.data.generate import generate_dataset

    base = Path(os.environ.get("POINTSTN_BENCH_DATA", "/tmp/pointstn-bench-data"))
    root = base / ("quick" if quick else "full")
    if not ((root / MANIFEST_NAME).exists() and read_manifest(root)["complete"]):
        config = from_dict(DatasetConfig, {"name": root.name, "objects_per_family": 1 if quick else 4,
                                           "views_per_object": 2 if quick else 8,
                                           "num_surface_points": 2048 if quick else 16384})
        generate_dataset(config, root, workers=1 if quick else 2, resume=(root / MANIFEST_NAME).exists(),
                         progress=False)
    return root


def cases(quick: bool) -> list[dict]:
    root = str(_dataset_root(quick))
    repeats = 3 if quick else 20
    return [
        {"case": "render 128 px", "params": {"views": 4 if quick else 60, "seed": 0}, "rounds": 1 if quick else 2,
         "contenders": [{"name": "render-1-process", "warmup": 1, "repeats": 1}]},
        {"case": f"loader, batch {BATCH}", "params": {"root": root, "points": 256 if quick else 2048},
         "rounds": 1 if quick else 2,
         "contenders": [{"name": f"workers-{w}", "warmup": 2, "repeats": repeats} for w in (0, 2)]},
    ]


def measure(contender: str, params: dict, *, warmup: int, repeats: int, memory) -> dict:
    if contender == "render-1-process":
        return _measure_render(params, memory)
    if not contender.startswith("workers-"):
        raise ValueError(f"unknown data contender {contender!r}")
    import torch

    from pointstn.data.augment import Augmentation
    from pointstn.data.dataset import PreparedDataset

    dataset = PreparedDataset(params["root"], split="train", num_points=int(params["points"]), deterministic=False,
                              augmentation=Augmentation(roll_probability=0.3))
    workers = int(contender.split("-")[1])
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0))
    memory.mark_inputs_allocated()
    batches = iter(loader)
    for _ in range(warmup):
        next(batches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            next(batches)
        except StopIteration:
            batches = iter(loader)
            next(batches)
        times.append(time.perf_counter() - start)
    return {"times_s": times, "unit": "s per batch of 16"}


def _measure_render(params: dict, memory) -> dict:
    import numpy as np

    from pointstn.data.render.appearance import AppearanceSampler
    from pointstn.data.render.backend import Renderer
    from pointstn.data.render.rig import Rig
    from pointstn.data.shapes import FAMILIES, generate_shape

    rig, sampler = Rig(), AppearanceSampler()
    shapes = [generate_shape(family, 0) for family in FAMILIES]
    rng = np.random.default_rng(int(params["seed"]))
    with Renderer(width=rig.image_size, height=rig.image_size) as renderer:
        memory.mark_inputs_allocated()
        times = []
        for i in range(int(params["views"])):
            shape = shapes[(i // 4) % len(shapes)]  # 4 views per object, as the dataset writer renders them
            start = time.perf_counter()
            view = rig.sample_view(rng)
            renderer.render(vertices=shape.vertices, faces=shape.faces, camera_from_object=view.matrix(),
                            intrinsics=rig.intrinsics(),
                            appearance=sampler.sample(rng, height=rig.image_size, width=rig.image_size))
            times.append(time.perf_counter() - start)
    return {"times_s": times, "unit": "s per view"}


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        *section_header(report, versions=False),
        (
            "- render: one process, 128 x 128 RGB + depth with random appearance (textures, lights, background), "
            "procedural objects, 4 views per object; loader: `PreparedDataset` train split, batches of 16 with "
            "augmentation and 2048 points, decoded from the compressed object files (cold per-object cache)."
        ),
        "",
        "| case | contender | median | throughput | peak extra MB |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    if env["quick"]:
        lines.insert(2, "- **quick mode: tiny sizes, a smoke test, not a measurement**")
    for case in report["cases"]:
        for name, result in case["results"].items():
            median = result["timing"]["median_s"]
            rate = f"{1 / median:.0f} views/s" if name.startswith("render") else f"{BATCH / median:.0f} images/s"
            lines.append(f"| {case['case']} | {name} | {median * 1000:.1f} ms | {rate} | {result['peak_extra_mb']:.0f} |")
    lines += ["", ("The full dataset pipeline (geometry, 16384 surface samples, rendering, compressed writes) is "
                   "timed by `pointstn prepare-data`, which prints views/s at the end."), ""]
    return "\n".join(lines)
