"""`pointstn diagnose`: the decoder's true-voxel and centre-point switches against their definitions, the
breakdown's rows, and the command's report and bad requests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pointstn.cli.main import main
from pointstn.config import ExperimentConfig, load_config
from pointstn.data.dataset import PreparedDataset
from pointstn.engine.checkpoint import save_checkpoint
from pointstn.engine.diagnose import centre_points, rotation_spread_deg, true_voxels, up_axis_errors_deg, variants
from pointstn.models.build import build_model
from pointstn.models.sparse_unet import SparseUNetDecoder
from pointstn.ops.rotation import axis_angle_to_matrix, random_rotation
from pointstn.ops.voxel import voxel_centers
from tests.models.test_sparse_unet import random_inputs, randomize_parameters

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs" / "smoke.yaml")


def _keys(coords: torch.Tensor) -> set:
    return {tuple(int(v) for v in row) for row in coords}


def _children(parents: set) -> set:
    return {(b, 2 * i + di, 2 * j + dj, 2 * k + dk) for b, i, j, k in parents
            for di in (0, 1) for dj in (0, 1) for dk in (0, 1)}


@pytest.mark.parametrize("seed", [0, 1])
def test_true_voxels_keep_exactly_the_occupied_candidates_and_centres_sit_at_voxel_centres(seed):
    model = SparseUNetDecoder(in_channels=3, channels=(4, 6, 8), resolution=16, points_per_voxel=2).eval()
    randomize_parameters(model, seed)
    points, features = random_inputs(batch=2, points=300, channels=3, seed=seed, dtype=torch.float32)
    targets = model.occupancy_targets(points.clamp(-0.5, 0.5))
    with true_voxels(model, (0, 1, 2)), centre_points(model), torch.no_grad():
        out = model(points, features, targets=targets)
    kept = [_keys(level.coords[level.targets.bool()]) for level in out.levels]
    assert all(torch.equal(level.kept, level.targets.bool()) for level in out.levels)  # what each level reports
    for level in (2, 1):  # each finer level's candidates are the children of the coarser level's kept voxels
        assert _keys(out.levels[level - 1].coords) == _children(kept[level])
    finest = out.levels[0].coords[out.levels[0].targets.bool()]
    centres = voxel_centers(finest, resolution=16, dtype=torch.float32)
    for b in range(2):
        got = out.points[b, : int(out.lengths[b])]
        want = centres[finest[:, 0] == b].repeat_interleave(2, dim=0)
        assert got.shape == want.shape and {tuple(p) for p in got.tolist()} == {tuple(p) for p in want.tolist()}
    # the switches are off again, and without them the model's own choice is what inference keeps
    assert model.true_voxel_levels == frozenset() and not model.point_head.centres_only
    with torch.no_grad():
        plain, labelled = model(points, features), model(points, features, targets=targets)
    assert torch.equal(plain.points, labelled.points) and torch.equal(plain.lengths, labelled.lengths)


def test_switches_need_targets_and_are_restored_after_an_error():
    model = SparseUNetDecoder(in_channels=3, channels=(4, 6), resolution=8, points_per_voxel=1).eval()
    points, features = random_inputs(batch=1, points=50, channels=3, seed=3, dtype=torch.float32)
    with pytest.raises(ValueError, match="pass `targets`"), true_voxels(model, (1,)), centre_points(model):
        model(points, features)
    assert model.true_voxel_levels == frozenset() and not model.point_head.centres_only


def test_variant_rows_add_one_level_at_a_time():
    assert variants((32, 16, 8)) == {
        "model": ((), False),
        "true at R8": ((2,), False),
        "true at R8-R16": ((1, 2), False),
        "true at R8-R32": ((0, 1, 2), False),
        "true voxels, centre points": ((0, 1, 2), True),
    }


def _checkpoint(path: Path, root: Path, *overrides: str) -> Path:
    torch.manual_seed(0)
    config = load_config(SMOKE, ExperimentConfig, [f"data.root={root}", "data.num_gt_points=512", *overrides])
    save_checkpoint(path, model=build_model(config), config=config, step=0)
    return path


def test_command_writes_the_breakdown(tiny_dataset, tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "best.pt", tiny_dataset)
    out = tmp_path / "report" / "levels.json"
    code = main(["diagnose", SMOKE, f"data.root={tiny_dataset}", "eval.num_gt_points=1024", "eval.num_pred_points=256",
                 "--ckpt", str(ckpt), "--max-images", "4", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    resolutions = build_model(load_config(SMOKE, ExperimentConfig)).decoder.resolutions
    assert list(report["f@1%"]) == list(variants(tuple(resolutions)))
    assert all(0.0 <= v <= 1.0 for v in report["f@1%"].values())
    assert [row["resolution"] for row in report["levels"]] == list(reversed(resolutions))
    for row in report["levels"]:
        assert row["kept"] >= 1 and 0.0 <= row["precision"] <= 1.0 and 0.0 <= row["recall"] <= 1.0
    assert 0.0 <= report["rotation_spread_deg"] <= 180.0
    assert set(report["up_axis_error_deg"]) == {"model", "mean_true_axis"}
    assert all(0.0 <= v <= 90.0 for v in report["up_axis_error_deg"].values())
    assert report["n_samples"] == 3  # 9 test images at stride 3
    printed = capsys.readouterr().out
    assert "| true voxels, centre points |" in printed and out.with_suffix(".md").read_text() in printed
    assert "Predicted rotation: median" in printed and "Up axis (canonical +z): median error" in printed


def test_by_family_runs_the_breakdown_once_per_family_of_the_split(tiny_dataset, tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "best.pt", tiny_dataset)
    out = tmp_path / "families.json"
    code = main(["diagnose", SMOKE, f"data.root={tiny_dataset}", "eval.num_gt_points=1024", "eval.num_pred_points=256",
                 "--ckpt", str(ckpt), "--max-images", "2", "--by-family", "--out", str(out)])
    assert code == 0
    families = json.loads(out.read_text())["families"]
    dataset = PreparedDataset(tiny_dataset, split="test")
    counts: dict[str, int] = {}
    for obj, _view in dataset.items:
        counts[dataset.records[obj]["family"]] = counts.get(dataset.records[obj]["family"], 0) + 1
    assert list(families) == sorted(counts)
    resolutions = build_model(load_config(SMOKE, ExperimentConfig)).decoder.resolutions
    for family, report in families.items():
        assert report["n_samples"] == min(2, counts[family])
        assert list(report["f@1%"]) == list(variants(tuple(resolutions)))
        assert all(0.0 <= v <= 1.0 for v in report["f@1%"].values())
    printed = capsys.readouterr().out
    assert out.with_suffix(".md").read_text() in printed and "--by-family" in printed
    assert all(f"| {family} | {report['n_samples']} |" in printed for family, report in families.items())


def test_bad_requests_are_one_line_errors(tiny_dataset, tmp_path, capsys):
    base = ["diagnose", SMOKE, f"data.root={tiny_dataset}", "--ckpt"]
    sparse = str(_checkpoint(tmp_path / "sparse.pt", tiny_dataset))
    assert main(base + [str(_checkpoint(tmp_path / "psgn.pt", tiny_dataset, "model.decoder.kind=none"))]) == 2
    assert "sparse decoder" in capsys.readouterr().err
    assert main(base + [str(_checkpoint(tmp_path / "dense.pt", tiny_dataset, "model.decoder.kind=dense"))]) == 2
    assert main(base + [sparse, "--max-images", "-1"]) == 2
    assert main(base + [sparse, "--split", "holdout"]) == 2
    assert main(base + [str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 4 and "Traceback" not in err


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotation_spread_is_the_median_angle_from_the_mean_rotation(seed):
    generator = torch.Generator().manual_seed(seed)
    base = random_rotation(1, generator=generator, dtype=torch.float64)[0]
    axis = torch.nn.functional.normalize(torch.randn(3, generator=generator, dtype=torch.float64), dim=0)
    angles = torch.tensor([-0.4, -0.1, 0.0, 0.1, 0.4], dtype=torch.float64)  # symmetric: the mean is `base`
    rotations = base @ axis_angle_to_matrix(angles[:, None] * axis)
    assert rotation_spread_deg(rotations) == pytest.approx(0.1 * 180 / torch.pi, rel=1e-9)
    assert rotation_spread_deg(base.expand(4, 3, 3)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_up_axis_error_is_the_angle_between_the_up_lines(seed):
    generator = torch.Generator().manual_seed(seed)
    truth = random_rotation(5, generator=generator, dtype=torch.float64)
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    about_up = axis_angle_to_matrix(torch.rand(5, 1, generator=generator, dtype=torch.float64) * 6.0 * z)
    upside_down = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    # turning the object about its own up axis, or upside down, keeps the up line: no error
    assert up_axis_errors_deg(truth @ about_up, truth)["model"] == pytest.approx(0.0, abs=1e-5)
    assert up_axis_errors_deg(truth @ upside_down, truth)["model"] == pytest.approx(0.0, abs=1e-5)
    # tilting it by a known angle about a horizontal canonical axis: that angle (folded into 0-90 deg)
    angles = torch.tensor([0.2, 0.5, 1.0, 1.4, 2.9], dtype=torch.float64)
    horizontal = torch.nn.functional.normalize(torch.cat((torch.randn(5, 2, generator=generator, dtype=torch.float64),
                                                          torch.zeros(5, 1, dtype=torch.float64)), dim=1), dim=1)
    tilted = truth @ axis_angle_to_matrix(angles[:, None] * horizontal)
    folded = [min(a, 180.0 - a) for a in torch.rad2deg(angles).tolist()]
    assert up_axis_errors_deg(tilted, truth)["model"] == pytest.approx(sorted(folded)[2], rel=1e-7)
    # one shared up axis (different turns about it): the truth's mean axis is exact
    shared = truth[:1] @ about_up
    assert up_axis_errors_deg(tilted, shared)["mean_true_axis"] == pytest.approx(0.0, abs=1e-5)
