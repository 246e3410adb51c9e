"""The model benchmark suite on tiny sizes: its plan, its inputs, and `pointstn benchmark --suite model --quick`.

No timing assertions: timings depend on the machine.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch

from pointstn.bench import model, runner, worker
from pointstn.cli.main import main

FLOAT32_ATOL = 1e-5


def run_workers_in_process(monkeypatch) -> list[dict]:
    """Make the runner call the worker in this process (the same suite code, without starting an
    interpreter per job: about 8 s each on a busy 2-core machine, mostly importing spconv). Fresh
    processes are covered by tests/bench/test_bench_smoke.py. Returns the jobs, in the order run."""
    jobs: list[dict] = []

    def spawn(job: dict) -> dict:
        jobs.append(job)
        threads = torch.get_num_threads()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            try:
                assert worker.main([json.dumps(job), str(out)]) == 0
            finally:
                torch.set_num_threads(threads)
            return json.loads(out.read_text())

    monkeypatch.setattr(runner, "_spawn", spawn)
    return jobs


def test_plan_trains_at_the_config_batch_and_infers_at_1_and_16():
    plan = model.cases(quick=False)
    assert [c["case"] for c in plan] == [
        "train, batch 16", "inference, batch 1, trained", "inference, batch 16, trained",
        "inference, batch 1, initialised",
    ]  # fmt: skip
    assert plan[0]["params"]["batch"] == model.load_experiment("base.yaml").train.batch_size == 16
    for case in plan:
        assert [c["name"] for c in case["contenders"]] == ["pointstn", "psgn", "stn_off"]
        assert case["params"]["config"] == "base.yaml" and case["rounds"] == 3
    quick = model.cases(quick=True)
    assert [c["params"]["batch"] for c in quick] == [2, 1, 2, 1]
    assert all(c["params"]["config"] == "smoke.yaml" and c["rounds"] == 1 for c in quick)
    assert all(contender["repeats"] == 1 for c in quick for contender in c["contenders"])


def test_contenders_are_the_documented_ablations():
    configs = {name: model.load_experiment("base.yaml", model.contender_overrides(name)) for name in model.CONTENDERS}
    assert configs["pointstn"].model.decoder.kind == "sparse" and configs["pointstn"].model.stn.enabled
    assert configs["psgn"].model.decoder.kind == "none" and configs["psgn"].model.stn.enabled
    assert configs["stn_off"].model.decoder.kind == "sparse" and not configs["stn_off"].model.stn.enabled
    with pytest.raises(ValueError, match="unknown model contender 'nope'; valid choices: pointstn, psgn, stn_off"):
        model.contender_overrides("nope")


def test_synthetic_targets_are_consistent_in_both_frames():
    images, targets = model.synthetic_batch(batch=5, image_size=32, gt_points=300, seed=3)
    assert images.shape == (5, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    assert targets.points.shape == targets.points_camera.shape == (5, 300, 3)
    R = targets.rotation.double()
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3),
                               atol=FLOAT32_ATOL, rtol=0)
    assert torch.allclose(torch.linalg.det(R), torch.ones(5, dtype=torch.float64), atol=FLOAT32_ATOL)
    # float64 reference of x_cam = R x + t, with t recovered from the centred canonical cloud
    centre = targets.points.double().mean(dim=1)
    centre_camera = targets.points_camera.double().mean(dim=1) - (centre[:, None] @ R.transpose(1, 2))[:, 0]
    expected = targets.points.double() @ R.transpose(1, 2) + centre_camera[:, None]
    torch.testing.assert_close(targets.points_camera.double(), expected, atol=FLOAT32_ATOL, rtol=0)
    assert ((centre_camera[:, 2] - model.DISTANCE_M).abs() <= 0.05 + FLOAT32_ATOL).all()
    # size = longest bounding-box edge; normalized points fill [-0.5, 0.5] along it
    extents = targets.points.amax(dim=1) - targets.points.amin(dim=1)
    torch.testing.assert_close(extents.amax(dim=1), targets.size, atol=0.02 * targets.size.max().item(), rtol=0)
    low, high = model.SIZE_RANGE_M
    assert ((targets.size >= low) & (targets.size <= high)).all()
    assert targets.points_normalized.abs().max() <= 0.5 + FLOAT32_ATOL
    again = model.synthetic_batch(batch=5, image_size=32, gt_points=300, seed=3)
    assert torch.equal(again[0], images) and torch.equal(again[1].points_camera, targets.points_camera)


def test_ground_truth_reaches_the_model_in_its_target_frame():
    from pointstn.config import ExperimentConfig, load_config

    _, targets = model.synthetic_batch(batch=2, image_size=32, gt_points=50, seed=1)
    for frame in ("predicted", "canonical"):
        config = load_config(model.CONFIGS / "smoke.yaml", ExperimentConfig, [f"model.decoder.target_frame={frame}"])
        truth = model.ground_truth_arguments(config, targets)
        if frame == "predicted":
            assert list(truth) == ["gt_points_camera"] and truth["gt_points_camera"] is targets.points_camera
        else:
            assert list(truth) == ["gt_points"] and torch.equal(truth["gt_points"], targets.points_normalized)


def test_inference_step_checks_the_active_set_and_psgn_ignores_ground_truth():
    config, network = model.build("psgn", {"config": "smoke.yaml", "seed": 0})
    images, targets = model.synthetic_batch(batch=2, image_size=config.data.image_size, gt_points=64, seed=0)
    network.eval()
    truth = model.ground_truth_arguments(config, targets)
    a = model.inference_step(network, images, ground_truth=truth, active_set="trained")
    b = model.inference_step(network, images, ground_truth=truth, active_set="initialised")
    assert torch.equal(a.points, b.points) and a.points.shape == (2, config.model.num_coarse_points, 3)
    assert not a.points.requires_grad
    with pytest.raises(ValueError, match="unknown active set"):
        model.inference_step(network, images, ground_truth=truth, active_set="trained-ish")


def test_cli_runs_the_model_suite_quick(tmp_path, monkeypatch):
    jobs = run_workers_in_process(monkeypatch)
    out_md, out_json = tmp_path / "X.md", tmp_path / "X.json"
    code = main(["benchmark", "--suite", "model", "--quick", "--out", str(out_md), "--json", str(out_json),
                 "--threads", "1"])
    assert code == 0
    assert len(jobs) == 4 * 3 and {j["contender"] for j in jobs} == set(model.CONTENDERS)

    suite = json.loads(out_json.read_text())["suites"]["model"]
    assert suite["environment"]["quick"] is True and suite["environment"]["threads"] == 1
    assert [c["case"] for c in suite["cases"]] == [c["case"] for c in model.cases(quick=True)]
    counts = {}
    for case in suite["cases"]:
        assert set(case["results"]) == set(model.CONTENDERS)
        for name, result in case["results"].items():
            timing, check = result["timing"], result["check"]
            assert timing["n"] == 1 and timing["median_s"] > 0
            assert check["batch"] == case["params"]["batch"] and check["peak_rss_mb"] > 0
            assert result["peak_extra_mb"] >= 0
            assert check["page_faults_per_step"] >= 0 and check["system_ms_per_step"] >= 0
            counts.setdefault(name, check["parameters"])
            assert check["parameters"] == counts[name]  # same model in every case
        results = case["results"]
        assert results["psgn"]["check"]["finest_candidates_per_sample"] == 0  # no decoder
        assert results["pointstn"]["check"]["finest_candidates_per_sample"] > 0
        if case["params"]["mode"] == "train":
            assert all(r["check"]["loss"] > 0 for r in results.values())
    assert counts["psgn"] < counts["pointstn"] and counts["stn_off"] < counts["pointstn"]  # no decoder; no STN MLP
    trained = next(c for c in suite["cases"] if c["case"] == "inference, batch 1, trained")["results"]["pointstn"]
    initial = next(c for c in suite["cases"] if c["case"] == "inference, batch 1, initialised")["results"]["pointstn"]
    # the trained active set follows the ground-truth shell; the random decoder alone keeps fewer voxels
    assert trained["check"]["output_points_per_sample"] > initial["check"]["output_points_per_sample"]

    text = out_md.read_text()
    section = text.split("<!-- bench:model:begin -->")[1].split("<!-- bench:model:end -->")[0]
    assert "quick mode" in section and f"pointstn {counts['pointstn']:,}" in section
    # the workers run with the command line's malloc settings, and the section says which
    states = {r["allocator"] for c in suite["cases"] for r in c["results"].values()}
    assert len(states) == 1 and f"- malloc in the worker processes: {states.pop()} (`pointstn/allocator.py`)" in section
    rows = [line for line in section.splitlines() if line.startswith(("| train", "| inference"))]
    assert len(rows) == 12 and all(row.count("|") == 14 for row in rows)
    assert "| train, batch 2 | pointstn |" in section and "| inference, batch 1, initialised | stn_off |" in section
