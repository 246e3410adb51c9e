"""Dataset generation: determinism, split hygiene, label consistency, resume, verify, bad folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pointstn.data.format import MANIFEST_NAME, read_manifest, read_object, verify_dataset
from pointstn.data.generate import assign_splits, generate_dataset, plan_tasks
from pointstn.data.render.rig import project
from pointstn.errors import PointstnError
from tests.fixtures import SMALL, small_config


def hashes(root: Path) -> dict[str, str]:
    return {k: v["sha256"] for k, v in read_manifest(root)["objects"].items()}


def test_manifest_records_every_object_with_its_split_and_hash(tiny_dataset):
    manifest = read_manifest(tiny_dataset)
    assert manifest["complete"] is True and manifest["counts"] == {"objects": 9, "views": 27}
    assert verify_dataset(tiny_dataset) == []
    in_splits = [o for name in ("train", "val", "test") for o in manifest["splits"][name]]
    assert sorted(in_splits) == sorted(manifest["objects"])  # every object in exactly one split
    assert len(in_splits) == len(set(in_splits))
    for family in SMALL["families"]:  # stratified: each family appears in every split
        for name in ("train", "val", "test"):
            assert any(o.startswith(family) for o in manifest["splits"][name]), (family, name)
    mug = next(v for k, v in manifest["objects"].items() if k.startswith("mug"))
    assert mug["volume_capacity"] > 0 and mug["volume_target"] > mug["volume_material"]


def test_same_config_gives_identical_bytes_with_any_worker_count(tiny_dataset, tmp_path):
    again = generate_dataset(small_config(), tmp_path / "again", workers=2, progress=False)
    assert again.failures == ()
    assert hashes(tmp_path / "again") == hashes(tiny_dataset)


def test_ground_truth_reprojects_into_the_mask(tiny_dataset):
    """Visible ground-truth surface points, posed by the stored camera, land inside the mask."""
    checked = inside = 0
    for entry in read_manifest(tiny_dataset)["objects"].values():
        arrays, _ = read_object(tiny_dataset / entry["file"])
        points = arrays["surface_points"].astype(np.float64)
        for v in range(len(arrays["images"])):
            cam = points @ arrays["rotations"][v].T + arrays["translations"][v]
            uv = project(cam, arrays["intrinsics"])
            col, row = np.rint(uv).astype(int).T
            size = arrays["masks"].shape[1]
            ok = (col >= 0) & (col < size) & (row >= 0) & (row < size)
            depth = np.zeros(len(cam))
            depth[ok] = arrays["depths"][v][row[ok], col[ok]]
            visible = ok & (np.abs(depth - cam[:, 2]) < 5e-3)  # not hidden behind another surface
            checked += int(visible.sum())
            inside += int(arrays["masks"][v][row[visible], col[visible]].sum())
    assert checked > 1000
    assert inside / checked >= 0.99


def test_assign_splits_is_proportional_and_covers_small_groups():
    config = small_config()
    rng = np.random.default_rng(0)
    labels = assign_splits(100, config, rng)
    assert (labels.count("train"), labels.count("val"), labels.count("test")) == (80, 10, 10)
    assert sorted(set(assign_splits(3, config, rng))) == ["test", "train", "val"]
    assert assign_splits(1, config, rng) == ["train"]
    tasks, _ = plan_tasks(small_config(objects_per_family=7))
    assert len({t.seed for t in tasks}) == len(tasks) == 21


def test_refuses_folders_it_must_not_touch(tiny_dataset, tmp_path):
    with pytest.raises(PointstnError, match="already holds a finished dataset"):
        generate_dataset(small_config(), tiny_dataset, workers=1, progress=False)
    with pytest.raises(PointstnError, match=r"holds a different dataset \(config differs in: seed\)"):
        generate_dataset(small_config(seed=4), tiny_dataset, workers=1, resume=True, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(PointstnError, match="not empty and holds no pointstn dataset"):
        generate_dataset(small_config(), other, workers=1, progress=False)
    assert (other / "notes.txt").read_text() == "mine"
    assert verify_dataset(tiny_dataset) == []


def test_verify_names_a_flipped_byte(tiny_dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset, copy)
    victim = sorted((copy / "objects").glob("*.npz"))[4]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    problems = verify_dataset(copy)
    assert len(problems) == 1 and victim.stem in problems[0] and "sha256" in problems[0]


def test_resume_after_a_kill_finishes_with_identical_content(tiny_dataset, tmp_path):
    """SIGKILL a real generation run mid-way, corrupt one finished file, then --resume."""
    root = tmp_path / "killed"
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(json.dumps(SMALL))  # JSON is YAML
    command = [sys.executable, "-m", "pointstn.cli.main", "prepare-data", "--config", str(config_file),
               "--out", str(root), "--workers", "1", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((root / "objects").glob("*.npz"))) < 3:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = sorted((root / "objects").glob("*.npz"))
    assert 3 <= len(finished) < 9, "the kill should land mid-way"
    assert read_manifest(root)["complete"] is False
    finished[0].write_bytes(finished[0].read_bytes()[:100])  # a damaged file is detected and redone
    (root / "objects" / ".box_0001.npz.abc.tmp").write_bytes(b"half")  # a half-written leftover
    result = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "objects kept from an earlier run" in result.stdout
    assert hashes(root) == hashes(tiny_dataset)
    assert verify_dataset(root) == [] and not list((root / "objects").glob(".*.tmp"))


def test_cli_reports_bad_config_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pointstn.cli.main", "prepare-data", "--config",
         str(Path(__file__).resolve().parents[2] / "configs/data/graspable_demo.yaml"), "families=[spaceship]",
         "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("pointstn prepare-data: error: unknown shape family 'spaceship'")
    assert not (tmp_path / "x" / MANIFEST_NAME).exists()


def test_meshes_become_a_dataset_and_a_bad_mesh_is_reported_not_fatal(tmp_path, capsys):
    import trimesh

    from pointstn.cli.main import main

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box(extents=(100.0, 60.0, 40.0)).export(meshes / "carton.stl")  # millimetres
    trimesh.creation.icosphere(radius=30.0).export(meshes / "ball.obj")
    (meshes / "broken.off").write_text("OFF\n1000000000 5 0\n0 0 0\n")
    out = tmp_path / "mine"
    code = main(["prepare-data", "--meshes", str(meshes), "--units", "mm", "--out", str(out), "--views", "2",
                 "--workers", "1", "--no-progress", "rig.image_size=64"])
    printed = capsys.readouterr().out
    assert code == 1  # the dataset is written, and the exit code still says something failed
    assert "failed: broken:" in printed and "header declares 1000000000 vertices" in printed
    manifest = read_manifest(out)
    assert sorted(manifest["objects"]) == ["ball", "carton"]
    carton = manifest["objects"]["carton"]
    assert carton["volume_target"] == pytest.approx(0.1 * 0.06 * 0.04, rel=1e-9)
    assert sorted(carton["extents"], reverse=True) == pytest.approx([0.1, 0.06, 0.04])
    assert manifest["failures"][0]["object"] == "broken" and verify_dataset(out) == []
