"""Determinism on CPU: the same seed and config give bit-identical training losses and weights, and the
same checkpoint and image give bit-identical predictions (docs/SECURITY.md says where CUDA differs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pointstn.engine.checkpoint import load_checkpoint, save_checkpoint
from pointstn.inference.predictor import Predictor
from pointstn.models.build import build_model
from tests.inference.conftest import small_config
from tests.reliability.conftest import run_cli

REPO = Path(__file__).resolve().parents[2]


def train_twice(tmp_path: Path, root: Path, kind: str, steps: int) -> tuple[Path, Path]:
    runs = []
    for name in ("a", "b"):
        run_dir = tmp_path / name
        result = run_cli("train", str(REPO / "configs" / "smoke.yaml"), f"train.max_steps={steps}", "train.batch_size=2",
                         f"train.val_every={steps}", f"train.checkpoint_every={steps}", "train.log_every=1",
                         "data.num_workers=0", f"data.root={root}", "data.num_gt_points=512", "eval.num_gt_points=512",
                         f"model.decoder.kind={kind}", "--out", str(run_dir), "--no-progress")
        assert result.code == 0, result.stderr[-2000:]
        runs.append(run_dir)
    return runs[0], runs[1]


def losses(run_dir: Path) -> list[dict]:
    rows = json.loads((run_dir / "history.json").read_text())
    return [{k: v for k, v in row.items() if k != "images_per_s"} for row in rows]


def test_same_seed_and_config_give_identical_losses_and_weights(tiny_dataset, tmp_path):
    """Two training runs (psgn baseline: decoder none, 5 AdamW steps with validation): identical history."""
    steps = 5
    a, b = train_twice(tmp_path, tiny_dataset, "none", steps)
    rows_a, rows_b = losses(a), losses(b)
    assert [r["step"] for r in rows_a if r["phase"] == "train"] == list(range(1, steps + 1))
    assert rows_a == rows_b  # exact: every loss term and validation metric, bit for bit
    weights_a, weights_b = load_checkpoint(a / "last.pt").model_state, load_checkpoint(b / "last.pt").model_state
    assert sorted(weights_a) == sorted(weights_b)
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    first = next(r for r in rows_a if r["phase"] == "train")
    assert np.isfinite(first["total"]) and first["total"] > 0


def test_the_sparse_decoder_gives_identical_outputs_and_gradients(tiny_dataset):
    """The spconv path (Native algorithm on CPU) is deterministic too: two models from one seed, one batch,
    forward in training mode with ground truth, backward: every output and every gradient bit for bit.
    (A full sparse training run costs ~15 s per run here; the gradients are what the optimizer would see.)"""
    from pointstn.data.dataset import PreparedDataset

    config = small_config("model.decoder.kind=sparse", "model.decoder.prune_threshold=0.5")
    batch = torch.utils.data.default_collate([PreparedDataset(tiny_dataset, split="train", num_points=512)[i]
                                              for i in (0, 4)])
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_model(config).train()
        output = model(batch.image, gt_points=batch.points / batch.extents.max(dim=1).values[:, None, None])
        objective = output.points_camera.square().mean() + output.coarse.square().mean()
        objective.backward()
        runs.append((output, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (out_a, grads_a), (out_b, grads_b) = runs
    assert out_a.points.shape[-1] == 3 and out_a.points.shape[1] > 0
    for name in ("points", "points_camera", "coarse", "lengths"):
        assert torch.equal(getattr(out_a, name), getattr(out_b, name)), name
    assert sorted(grads_a) == sorted(grads_b) and any(n.startswith("decoder") for n in grads_a)
    assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)


def test_same_checkpoint_and_image_give_identical_predictions(tmp_path):
    """Two models built from the same seed are the same model; two predictors loaded from one checkpoint,
    fed the same photo, return the same cloud, pose and volumes bit for bit."""
    config = small_config()
    models = []
    for _ in range(2):
        torch.manual_seed(11)
        models.append(build_model(config).eval())
    state_a, state_b = models[0].state_dict(), models[1].state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model=models[0], config=config, step=0)
    image = tmp_path / "photo.png"
    rng = np.random.default_rng(5)
    pixels = np.full((96, 80, 3), 255, np.uint8)
    pixels[20:70, 15:60] = rng.integers(0, 200, (50, 45, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    results = []
    for _ in range(2):
        predictor = Predictor.from_checkpoint(path)
        [result] = predictor.predict(str(image), num_points=256)
        results.append(result)
    a, b = results
    assert a.points_camera.shape[1] == 3 and len(a.points_camera) > 0
    assert np.array_equal(a.points_camera, b.points_camera)
    assert np.array_equal(a.points_canonical, b.points_canonical)
    assert np.array_equal(a.pose.matrix(), b.pose.matrix())
    assert a.geometry.to_json() == b.geometry.to_json()
