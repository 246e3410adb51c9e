"""`pointstn demo`: the end-to-end demo behind `make demo`.

1. make (or reuse) the procedural demo dataset, with a contact sheet;
2. train pointstn (configs/demo.yaml) into runs/demo;
3. train the psgn baseline (same config, decoder none, same steps) into runs/demo_psgn;
4. evaluate pointstn against the retrieval, oracle_nn and psgn baselines on the held-out objects:
   runs/demo/metrics.json (+ .md table, + .png reconstructions next to the ground truth);
5. reconstruct a few held-out images as a user would (`pointstn predict` on PNG files: PLY, NPZ,
   PNG, HTML, JSON with pose and volume) and export each object's ground truth next to its
   reconstruction (`pointstn export --compare`): runs/demo/predictions/.
Finished stages are reused when the command runs again (delete runs/demo* to start over).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from pointstn.errors import PointstnError

HELP = "run the end-to-end demo: data, training, evaluation against the baselines"
REPO = Path(__file__).resolve().parents[2]
DATA_CONFIG = REPO / "configs" / "data" / "graspable_demo.yaml"
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
STAGES = 5
SHOWCASE_IMAGES = 4  # held-out test images the demo reconstructs from files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="data/graspable_demo", help="where the demo dataset is made (or reused)")
    parser.add_argument("--runs", default="runs", help="folder for the demo's runs")
    parser.add_argument("--workers", type=int, default=2, help="dataset generation processes")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: configs/demo.yaml)")


def _environment() -> None:
    import torch

    from pointstn import __version__

    print(f"pointstn {__version__} | python {platform.python_version()} | torch {torch.__version__} "
          f"| threads {torch.get_num_threads()} | cuda {torch.cuda.is_available()}", flush=True)


def _dataset(root: Path, workers: int) -> None:
    from pointstn.config import load_config
    from pointstn.data.config import DatasetConfig
    from pointstn.data.format import MANIFEST_NAME, read_manifest
    from pointstn.data.generate import generate_dataset
    from pointstn.data.preview import write_preview

    config = load_config(DATA_CONFIG, DatasetConfig)
    if (root / MANIFEST_NAME).exists() and read_manifest(root)["complete"]:
        print(f"[1/{STAGES}] dataset: reusing {root} (delete it to make it again)")
    else:
        summary = generate_dataset(config, root, workers=workers, resume=(root / MANIFEST_NAME).exists())
        print(f"[1/{STAGES}] dataset: {summary.objects} objects, {summary.views} views in {root} "
              f"({summary.built_views} rendered at {summary.views_per_second:.0f} views/s)")
    manifest = read_manifest(root)
    sizes = ", ".join(f"{name} {len(ids)}" for name, ids in manifest["splits"].items())
    print(f"      splits by object: {sizes}; contact sheet: {write_preview(root)}", flush=True)


def _train(number: int, label: str, overrides: list[str], run_dir: Path) -> None:
    from pointstn.config import ExperimentConfig, load_config
    from pointstn.engine.checkpoint import load_checkpoint
    from pointstn.engine.trainer import train

    config = load_config(DEMO_CONFIG, ExperimentConfig, overrides)
    last = run_dir / "last.pt"
    if last.is_file() and load_checkpoint(last).step >= config.train.max_steps and (run_dir / "best.pt").is_file():
        print(f"[{number}/{STAGES}] {label}: reusing {run_dir} (finished)")
        return
    start = time.perf_counter()
    result = train(config, run_dir=run_dir, resume=last if last.is_file() else None)
    if result.stopped != "finished":
        raise PointstnError(f"{label} training stopped early ({result.stopped}); rerun the demo to continue it")
    print(f"[{number}/{STAGES}] {label}: {result.step} steps in {time.perf_counter() - start:.0f} s, best "
          f"{config.train.best_metric} (val, shape frame) {result.best_value:.4f}; {run_dir}", flush=True)


def run(args: argparse.Namespace) -> int:
    for path in (DATA_CONFIG, DEMO_CONFIG):
        if not path.is_file():
            raise PointstnError(f"the demo needs the repository's configs ({path} is missing); run it from a clone")
    start = time.perf_counter()
    print("== pointstn demo ==")
    _environment()
    data, runs = Path(args.data), Path(args.runs)
    _dataset(data, args.workers)
    common = [f"data.root={data}"] + ([f"train.max_steps={args.steps}"] if args.steps else [])
    _train(2, "train pointstn", common, runs / "demo")
    _train(3, "train psgn baseline", common + ["model.decoder.kind=none", "name=demo_psgn"], runs / "demo_psgn")

    from pointstn.cli.main import main

    code = main(["test", str(DEMO_CONFIG), *common, "--ckpt", str(runs / "demo" / "best.pt"),
                 "--baselines", "retrieval,oracle_nn,psgn", "--psgn-ckpt", str(runs / "demo_psgn" / "best.pt"),
                 "--out", str(runs / "demo" / "metrics.json")])
    if code:
        return code
    report = json.loads((runs / "demo" / "metrics.json").read_text())
    ours = report["methods"]["pointstn"]["shape"]["f@1%"]
    psgn = report["methods"]["psgn"]["shape"]["f@1%"]
    verdict = "beats" if ours > psgn else "does NOT beat"
    print(f"[4/{STAGES}] evaluation on {report['n_samples']} held-out images: pointstn f@1% {ours:.4f} {verdict} "
          f"psgn {psgn:.4f} (shape frame); table {runs / 'demo' / 'metrics.md'}, figure {runs / 'demo' / 'metrics.png'}")
    code = _showcase(data, runs / "demo")
    if code:
        return code
    print(f"demo finished in {(time.perf_counter() - start) / 60:.1f} min; reconstruct your own photos with "
          f"`pointstn predict --ckpt {runs / 'demo' / 'best.pt'} --out DIR IMAGE...` (README)")
    return 0


def _showcase(data: Path, run_dir: Path) -> int:
    """Stage 5: write held-out test images as PNG files, predict from them, export the ground truth beside."""
    import numpy as np
    from PIL import Image

    from pointstn.cli.main import main
    from pointstn.data.dataset import PreparedDataset

    out = run_dir / "predictions"
    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    test = PreparedDataset(data, split="test", num_points=16)
    step = max(1, len(test.records) // SHOWCASE_IMAGES)
    chosen = [(o, 0) for o in range(0, len(test.records), step)][:SHOWCASE_IMAGES]
    files = []
    for object_index, view in chosen:
        sample = test[test.items.index((object_index, view))]
        name = f"{test.records[object_index]['object_id']}_view{view}"
        pixels = (sample.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(inputs / f"{name}.png")
        files.append((name, test.records[object_index]["object_id"], view))
    code = main(["predict", "--ckpt", str(run_dir / "best.pt"), "--out", str(out), "--no-progress",
                 *(str(inputs / f"{name}.png") for name, _, _ in files)])
    for name, object_id, view in files:
        code = code or main(["export", "--dataset", str(data), "--object", object_id, "--view", str(view),
                             "--out", str(out / "compare"), "--compare", str(out / f"{name}.ply"), "--name", name])
    if not code:
        print(f"[5/{STAGES}] reconstructed {len(files)} held-out images from PNG files: clouds (PLY/NPZ), pictures, "
              f"interactive pages and pose/volume JSON in {out}; ground truth beside each in {out / 'compare'}")
    return code
