"""`pointstn test`: every metric in the documented JSON shape, the baselines, the table and the figure."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pointstn.cli.main import main
from pointstn.config import ExperimentConfig, load_config
from pointstn.engine.checkpoint import save_checkpoint
from pointstn.models.build import build_model

REPO = Path(__file__).resolve().parents[2]
METRICS = {"cd_l2", "cd_l1", "f@1%", "f@2%"}


def _checkpoint(path: Path, root: Path, *overrides: str) -> Path:
    torch.manual_seed(0)
    config = load_config(REPO / "configs" / "smoke.yaml", ExperimentConfig, [f"data.root={root}", *overrides])
    save_checkpoint(path, model=build_model(config), config=config, step=0)
    return path


def test_report_has_every_method_frame_and_metric(tiny_dataset, tmp_path, capsys):
    ours = _checkpoint(tmp_path / "best.pt", tiny_dataset, "data.num_gt_points=512")
    psgn = _checkpoint(tmp_path / "psgn.pt", tiny_dataset, "data.num_gt_points=512", "model.decoder.kind=none")
    out = tmp_path / "metrics.json"
    code = main(["test", str(REPO / "configs" / "smoke.yaml"), f"data.root={tiny_dataset}", "eval.num_gt_points=1024",
                 "eval.num_pred_points=256", "--ckpt", str(ours), "--baselines", "retrieval,oracle_nn,psgn",
                 "--psgn-ckpt", str(psgn), "--out", str(out), "--prune-threshold", "0.3", "--voxel-floor", "1"])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["methods"]) == {"pointstn", "retrieval", "oracle_nn", "psgn"}
    for frames in report["methods"].values():
        assert set(frames) == {"shape", "metric", "canonical"}
        assert METRICS <= set(frames["shape"]) and METRICS | {"vol_rel_err", "rot_err_deg"} <= set(frames["metric"])
        assert 0.0 <= frames["shape"]["f@1%"] <= frames["shape"]["f@2%"] <= 1.0
    assert report["n_samples"] == 9  # 3 test objects x 3 views
    assert set(report["medians"]) == set(report["methods"])
    assert report["medians"]["oracle_nn"]["metric"]["vol_rel_err"] >= 0.0
    assert "## median vol_rel_err (metric frame)" in out.with_suffix(".md").read_text()
    assert set(report["per_family"]["pointstn"]) == {"ball", "box", "mug"}
    assert "extreme" in report["per_view_bin"]["pointstn"] or set(report["per_view_bin"]["pointstn"]) == {"canonical"}
    # the oracle picks the closest training shape with the true pose: it beats retrieval on average
    assert report["methods"]["oracle_nn"]["shape"]["cd_l2"] <= report["methods"]["retrieval"]["shape"]["cd_l2"]
    assert out.with_suffix(".md").read_text().startswith("# Evaluation on")
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "metrics:" in capsys.readouterr().out


def test_bad_requests(tiny_dataset, tmp_path):
    ckpt = _checkpoint(tmp_path / "best.pt", tiny_dataset)
    base = ["test", str(REPO / "configs" / "smoke.yaml"), f"data.root={tiny_dataset}", "--ckpt", str(ckpt)]
    assert main(base + ["--baselines", "nearest"]) == 2
    assert main(base + ["--baselines", "psgn"]) == 2  # needs --psgn-ckpt
    assert main(base + ["--prune-threshold", "1.5"]) == 2
    assert main(base + ["--voxel-floor", "-1"]) == 2
    assert main(base + ["--split", "holdout"]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(base + ["--out", str(blocker / "sub" / "metrics.json")]) == 2  # refused before evaluating
    assert not (tmp_path / "metrics.json").exists()



def test_median_of_odd_and_even_counts_skips_non_finite_values():
    import math

    import torch

    from pointstn.engine.evaluate import MetricTable

    table = MetricTable()
    values = [3.0, 1.0, math.nan, 10.0, 2.0]
    table.add({"metric": {"vol_rel_err": torch.tensor(values)}}, families=["a"] * 5, bins=["canonical"] * 5,
              object_ids=[str(i) for i in range(5)])
    assert table.summary()["median"]["metric"]["vol_rel_err"] == 2.5  # of 1, 2, 3, 10
    assert table.summary()["overall"]["metric"]["vol_rel_err"] == 4.0
    table.add({"metric": {"vol_rel_err": torch.tensor([7.0])}}, families=["a"], bins=["top"], object_ids=["5"])
    assert table.summary()["median"]["metric"]["vol_rel_err"] == 3.0


def test_baselines_and_validation_load_the_evaluation_points_not_the_training_targets(tiny_dataset, tmp_path,
                                                                                      monkeypatch):
    """With `data.num_gt_points` (training targets) below `eval.num_gt_points`, the retrieval and oracle
    clouds still hold the evaluation's points, as pointstn's output is resampled from thousands (the
    baselines once returned 2048-point clouds against pointstn's 4096 for configs/graspable_full.yaml), and
    validation during training measures against the same ground truth as `pointstn test`."""
    from pointstn.data.dataset import PreparedDataset
    from pointstn.engine import trainer
    from pointstn.engine.evaluate import evaluation_points
    from pointstn.engine.test_run import build_methods

    config = load_config(REPO / "configs" / "smoke.yaml", ExperimentConfig,
                         [f"data.root={tiny_dataset}", "data.num_gt_points=128", "eval.num_gt_points=1024"])
    assert evaluation_points(config, tiny_dataset) == 1024
    assert evaluation_points(load_config(REPO / "configs" / "smoke.yaml", ExperimentConfig), tiny_dataset) == 2048
    methods = build_methods(config, build_model(config).eval(), baselines=("retrieval", "oracle_nn"),
                            train_root=tiny_dataset)
    test_set = PreparedDataset(tiny_dataset, split="test", image_size=config.data.image_size, num_points=1024)
    batch = next(iter(torch.utils.data.DataLoader(test_set, batch_size=3)))
    for name in ("retrieval", "oracle_nn"):
        assert methods[name](batch).points_camera.shape[1] == 1024, name

    seen = []
    monkeypatch.setattr(trainer, "validate", lambda model, dataset, cfg, **kw: seen.append(dataset.num_points) or {})
    monkeypatch.setattr(trainer, "_calibrate_best", lambda *args: None)
    trainer.train(load_config(REPO / "configs" / "smoke.yaml", ExperimentConfig,
                              [f"data.root={tiny_dataset}", "data.num_gt_points=128", "eval.num_gt_points=1024",
                               "train.max_steps=1", "train.batch_size=2", "train.val_every=1", "data.num_workers=0"]),
                  run_dir=tmp_path / "run", progress=False)
    assert seen == [1024]


def test_a_calibrated_checkpoint_is_not_reported_as_a_different_model(tiny_dataset, tmp_path, capsys):
    """Calibration stores its (voxel_floor, prune_threshold) in best.pt: the command names the pair it
    evaluates and keeps the "differs" note for a different network."""
    base = ["test", str(REPO / "configs" / "smoke.yaml"), f"data.root={tiny_dataset}", "eval.num_gt_points=256",
            "eval.num_pred_points=128", "--baselines", "", "--no-volumes"]
    calibrated = _checkpoint(tmp_path / "calibrated.pt", tiny_dataset, "model.decoder.voxel_floor=2",
                             "model.decoder.prune_threshold=0.7")
    assert main(base + ["--ckpt", str(calibrated), "--out", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "differs" not in out
    assert f"inference pruning: voxel_floor 2, prune_threshold 0.7 (stored in {calibrated})" in out
    assert main(base + ["--ckpt", str(calibrated), "--out", str(tmp_path / "b.json"), "--voxel-floor", "1"]) == 0
    assert "inference pruning: voxel_floor 1, prune_threshold 0.7 (--prune-threshold/--voxel-floor)" in \
        capsys.readouterr().out
    other = _checkpoint(tmp_path / "other.pt", tiny_dataset, "model.decoder.points_per_voxel=3")
    assert main(base + ["--ckpt", str(other), "--out", str(tmp_path / "c.json")]) == 0
    assert "the model section of" in capsys.readouterr().out
