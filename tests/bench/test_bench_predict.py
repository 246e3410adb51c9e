"""The predict benchmark suite on tiny sizes: its photos and its quick run (Markdown section + JSON).

No timing assertions: timings depend on the machine.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pointstn.bench import predict
from pointstn.bench.runner import run
from tests.bench.test_bench_model import run_workers_in_process


def test_photos_are_distinct_shaded_blobs_on_a_light_background(tmp_path):
    from PIL import Image

    paths = predict.write_photos(tmp_path, count=3, height=60, width=80, seed=1)
    pixels = [np.asarray(Image.open(p)) for p in paths]
    assert [p.name for p in paths] == ["photo_000.png", "photo_001.png", "photo_002.png"]
    assert all(p.shape == (60, 80, 3) and p.dtype == np.uint8 for p in pixels)
    assert not np.array_equal(pixels[0], pixels[1])
    for image in pixels:
        corners = image[[0, 0, -1, -1], [0, -1, 0, -1]].astype(float)
        assert corners.min() > 170  # background
        blob = np.abs(image.astype(float) - np.median(corners, axis=0)).max(axis=2) > 40
        # an ellipse with semi-axes 12-22 % of the width and 15-28 % of the height
        assert 0.04 < blob.mean() < 0.25
        assert image[blob].std() > 5  # shaded, not flat
    again = predict.photo(height=60, width=80, rng=np.random.default_rng(1))
    assert np.array_equal(again, pixels[0])


def test_stage_medians():
    check = {"stages_s": {"load": [1.0, 3.0, 2.0], "model": [5.0], "geometry": [1.0, 2.0], "export": [0.5, 0.1, 0.3]}}
    assert predict.stage_medians(check) == {"load": 2.0, "model": 5.0, "geometry": 1.5, "export": 0.3}


def test_unknown_contender():
    with pytest.raises(ValueError, match="unknown predict contender 'obj'; valid choices: ply, all-formats"):
        predict.measure("obj", predict.cases(quick=True)[0]["params"], warmup=0, repeats=1, memory=None)


def test_predict_suite_quick(tmp_path, monkeypatch):
    jobs = run_workers_in_process(monkeypatch)
    out_md, out_json = tmp_path / "B.md", tmp_path / "b.json"
    run(["predict"], out_md=out_md, out_json=out_json, quick=True, threads=1, command="pytest predict")
    assert [j["contender"] for j in jobs] == list(predict.CONTENDERS) * len(predict.QUICK["batches"])

    cases = json.loads(out_json.read_text())["suites"]["predict"]["cases"]
    assert [c["params"]["batch_size"] for c in cases] == list(predict.QUICK["batches"])
    for case in cases:
        params, batch = case["params"], case["params"]["batch_size"]
        for name, result in case["results"].items():
            check = result["check"]
            assert result["timing"]["n"] == predict.QUICK["repeats"]  # one time per batch: seconds per image
            assert set(check["stages_s"]) == set(predict.STAGES)
            assert all(len(v) == predict.QUICK["repeats"] * batch and min(v) > 0 for v in check["stages_s"].values())
            # every image's stages happen inside its batch's timed span
            assert sum(predict.stage_medians(check).values()) <= result["timing"]["max_s"] * batch
            # prune_threshold 0: the decoder's fine cloud exists and is cut to num_points by farthest-point sampling
            assert (check["points"], check["cloud_source"], check["resampling"]) == (params["num_points"], "fine", "fps")
            assert check["files"] == sorted(predict.CONTENDERS[name]) and check["bytes_written"] > 0
            assert check["startup_s"] > 0
        assert case["results"]["all-formats"]["check"]["bytes_written"] > case["results"]["ply"]["check"]["bytes_written"]

    section = out_md.read_text().split("<!-- bench:predict:begin -->")[1].split("<!-- bench:predict:end -->")[0]
    assert "quick mode" in section and "`pytest predict`" in section and "random-weight" in section
    rows = [line for line in section.splitlines() if line.startswith("| 96 x 128 PNG")]
    assert [row.split("|")[2].strip() for row in rows] == ["ply", "all-formats"] * 2
    assert ["batch 1" in row for row in rows] == [True, True, False, False]
    assert all(row.count("|") == 15 for row in rows)
    assert "512 (fine, fps)" in rows[0] and "html, json, npz, ply, png" in rows[1]
    assert "batch 2 all-formats: load " in section


def test_predict_suite_measures_a_given_trained_checkpoint(tmp_path, monkeypatch):
    """--checkpoint: the suite loads that file as stored (no random model, no pruning override)."""
    import torch

    from pointstn.bench.model import load_experiment
    from pointstn.engine.checkpoint import save_checkpoint
    from pointstn.models.build import build_model

    config = load_experiment("smoke.yaml", ["model.decoder.voxel_floor=1.0"])
    torch.manual_seed(0)
    checkpoint = tmp_path / "trained.pt"
    save_checkpoint(checkpoint, model=build_model(config), config=config, step=7)
    run_workers_in_process(monkeypatch)
    out_md, out_json = tmp_path / "B.md", tmp_path / "b.json"
    run(["predict"], out_md=out_md, out_json=out_json, quick=True, threads=1, checkpoint=checkpoint)
    cases = json.loads(out_json.read_text())["suites"]["predict"]["cases"]
    assert all(c["params"]["checkpoint"] == str(checkpoint.resolve()) and "overrides" not in c["params"] for c in cases)
    section = out_md.read_text().split("<!-- bench:predict:begin -->")[1]
    assert f"checkpoint: `{checkpoint.resolve()}` (trained" in section
