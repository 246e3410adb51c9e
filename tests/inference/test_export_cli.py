"""`pointstn export`: exact PLY <-> NPZ conversion, dataset ground truth in the camera frame, comparison
pages, prediction NPZs, and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pointstn.cli import export as export_cli
from pointstn.cli import main as cli_main
from pointstn.data.format import object_file, read_manifest, read_object
from pointstn.inference.outputs import read_cloud
from pointstn.io.cloud import PointCloud
from pointstn.io.npz import load_cloud_npz, save_cloud_npz
from pointstn.io.ply import read_ply, write_ply


@pytest.fixture(autouse=True)
def wired(monkeypatch):
    monkeypatch.setitem(cli_main.COMMANDS, "export", export_cli)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(["export", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_ply_and_npz_convert_exactly(tmp_path, capsys):
    points = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    write_ply(tmp_path / "c.ply", points)
    code, _, err = run(capsys, str(tmp_path / "c.ply"), "--out", str(tmp_path / "a"), "--format", "npz")
    assert code == 0, err
    cloud, meta = load_cloud_npz(tmp_path / "a" / "c.npz")
    assert np.array_equal(cloud.points, points) and meta["units"] == "as in the file"
    code, _, err = run(capsys, str(tmp_path / "a" / "c.npz"), "--out", str(tmp_path / "b"), "--format", "ply,html,png")
    assert code == 0, err
    assert np.array_equal(np.asarray(read_ply(tmp_path / "b" / "c.ply").points), points)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["c.html", "c.ply", "c.png"]


def test_dataset_truth_in_the_camera_frame_and_comparison(tiny_dataset, tmp_path, capsys):
    object_id = min(read_manifest(tiny_dataset)["objects"])
    arrays, _ = read_object(tiny_dataset / object_file(object_id))
    view = 1
    truth = arrays["surface_points"].astype(np.float64) @ arrays["rotations"][view].T + arrays["translations"][view]
    prediction = (truth[::4] + 0.01).astype(np.float32)
    write_ply(tmp_path / "pred.ply", prediction)
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "--dataset", str(tiny_dataset), "--object", object_id, "--view", str(view),
                            "--compare", str(tmp_path / "pred.ply"), "--out", str(out),
                            "--format", "ply,npz,png,html,image")
    assert code == 0, err
    stem = f"{object_id}_view{view}_truth"
    exported = np.asarray(read_ply(out / f"{stem}.ply").points, dtype=np.float64)
    assert np.allclose(exported, truth, atol=1e-6)  # float32 in the file
    with Image.open(out / f"{stem}.image.png") as image:
        assert np.array_equal(np.asarray(image), arrays["images"][view])
    html = (out / "compare.html").read_text()
    assert stem in html and "pred" in html and html.count('"xyz"') == 2
    assert (out / "compare.png").stat().st_size > 0 and "comparison: compare.html, compare.png" in stdout
    code, _, err = run(capsys, "--dataset", str(tiny_dataset), "--object", object_id, "--frame", "canonical",
                       "--out", str(tmp_path / "canon"), "--format", "npz")
    assert code == 0, err
    cloud, meta = load_cloud_npz(tmp_path / "canon" / f"{object_id}_truth.npz")
    assert np.allclose(cloud.points, arrays["surface_points"]) and meta["units"] == "m"


def test_prediction_npz_is_read_as_camera_frame_points(tmp_path):
    points = np.random.default_rng(1).normal(size=(100, 3)).astype(np.float32)
    meta = {"format": "pointstn-prediction", "units": {"points_camera": "m"}}
    np.savez(tmp_path / "p.npz", points=points, points_canonical=points, meta_json=np.array(json.dumps(meta)))
    read, read_meta = read_cloud(tmp_path / "p.npz")
    assert np.array_equal(read, points) and read_meta["format"] == "pointstn-prediction"


def test_bad_sources_are_reported_and_others_exported(tiny_dataset, tmp_path, capsys):
    save_cloud_npz(tmp_path / "ok.npz", PointCloud(points=np.zeros((5, 3), np.float32) + [0, 0, 1]))
    (tmp_path / "broken.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 99\n")
    code, _, err = run(capsys, str(tmp_path / "broken.ply"), str(tmp_path / "ok.npz"), "--out",
                            str(tmp_path / "o"), "--format", "ply")
    assert code == export_cli.EXIT_SOME_FAILED and "broken.ply" in err and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["ok.ply"]
    code, _, err = run(capsys, "--dataset", str(tiny_dataset), "--object", "no_such_object", "--out", str(tmp_path / "o"))
    assert code == export_cli.EXIT_SOME_FAILED and "has no object 'no_such_object'" in err
    object_id = min(read_manifest(tiny_dataset)["objects"])
    code, _, err = run(capsys, "--dataset", str(tiny_dataset), "--object", object_id, "--view", "99",
                       "--out", str(tmp_path / "o"))
    assert code == export_cli.EXIT_SOME_FAILED and "--view 99" in err
    code, _, err = run(capsys, str(tmp_path / "ok.npz"), "--out", str(tmp_path), "--format", "npz")
    assert code == export_cli.EXIT_SOME_FAILED and "would overwrite the input" in err
    code, _, err = run(capsys, "--out", str(tmp_path / "o"))
    assert code == 2 and "nothing to export" in err
    code, _, err = run(capsys, "--dataset", str(tiny_dataset), "--out", str(tmp_path / "o"))
    assert code == 2 and "--dataset and --object go together" in err


def test_hostile_npz_header_is_refused(tmp_path):
    """An array header that claims far more data than its member holds is refused before allocation."""
    import io
    import zipfile

    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 3)})
    with zipfile.ZipFile(tmp_path / "evil.npz", "w") as archive:
        archive.writestr("points.npy", member.getvalue() + b"\x00" * 12)
    from pointstn.errors import PointstnError

    with pytest.raises(PointstnError, match=r"claims shape \(1000000000, 3\) \(12000000000 bytes\) but holds"):
        read_cloud(tmp_path / "evil.npz")
