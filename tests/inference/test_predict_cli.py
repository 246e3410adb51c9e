"""`pointstn predict` end to end: every output, bad inputs in a batch, one-line fatal errors, rollback."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from pointstn.cli import main as cli_main
from pointstn.cli import predict as predict_cli
from pointstn.errors import PointstnError
from pointstn.io.ply import read_ply


@pytest.fixture(autouse=True)
def wired(monkeypatch):
    """The subcommand as main.py will register it (harmless once it does)."""
    monkeypatch.setitem(cli_main.COMMANDS, "predict", predict_cli)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(["predict", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def good_image(path, seed: int, size: int = 64) -> None:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def test_every_output_for_good_inputs_and_one_line_per_bad_input(checkpoint, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    good_image(inputs / "a.png", 0)
    good_image(inputs / "b.jpg", 1, size=90)
    (inputs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(inputs / "tiny.png")
    Image.fromarray(np.zeros((64, 64, 4), np.uint8), mode="RGBA").save(inputs / "transparent.png")
    Image.fromarray(np.full((64, 64), 128, np.uint8), mode="L").save(inputs / "gray.png")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "--ckpt", str(checkpoint), str(inputs), "--out", str(out), "--no-progress",
                            "--num-points", "256", "--batch-size", "2")
    assert code == predict_cli.EXIT_SOME_FAILED
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 3
    assert any("corrupt.png: cannot read image" in e for e in error_lines)
    assert any("tiny.png" in e and ">= 32 px" in e for e in error_lines)
    assert any("transparent.png" in e and "fully transparent" in e for e in error_lines)
    assert "3 of 6 inputs failed" in err and "3 of 6 inputs written" in stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{s}.{e}" for s in ("a", "b", "gray") for e in ("ply", "npz", "png", "html", "json"))

    summary = json.loads((out / "a.json").read_text())
    ply = read_ply(out / "a.ply")
    with np.load(out / "a.npz", allow_pickle=False) as npz:
        points = npz["points"]
        canonical = npz["points_canonical"]
        rotation, scale, translation = npz["rotation"], float(npz["scale"]), npz["translation"]
        assert json.loads(str(npz["meta_json"]))["pose"]["scale_m"] == summary["pose"]["scale_m"]
        hull = float(npz["convex_hull_volume_m3"])
    assert points.shape == (256, 3) and np.array_equal(np.asarray(ply.points), points)
    assert np.allclose(points, scale * canonical.astype(np.float64) @ rotation.T + translation, atol=1e-6)
    assert ply.colors is not None
    assert summary["units"]["points_camera"] == "m" and summary["units"]["solid_volume"] == "m^3"
    assert summary["pointstn_version"] and summary["checkpoint"]["step"] == 3
    assert summary["geometry"]["convex_hull_volume_m3"] == pytest.approx(hull)
    assert set(summary["timings_s"]) == {"load", "model", "geometry", "export", "batch_size"}
    assert summary["timings_s"]["export"] > 0 and summary["scale"]["source"] == "rig"
    assert summary["outputs"]["ply"] == "a.ply" and summary["input"]["source"].endswith("a.png")
    html = (out / "a.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    with Image.open(out / "a.png") as figure:
        assert figure.width > 3 * figure.height > 0  # input beside three views
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_scale_hint_mask_template_and_box(checkpoint, tmp_path, capsys):
    good_image(tmp_path / "x.png", 2)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:40, 20:50] = 255
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "x.png")
    code, _, err = run(capsys, "--ckpt", str(checkpoint), str(tmp_path / "x.png"), "--out", str(tmp_path / "o1"),
                       "--mask", str(tmp_path / "masks" / "{stem}.png"), "--scale-hint", "0.3",
                       "--format", "json", "--no-progress")
    assert code == 0, err
    summary = json.loads((tmp_path / "o1" / "x.json").read_text())
    assert summary["scale"]["source"] == "scale_hint" and summary["scale_hint_m"] == 0.3
    assert summary["geometry"]["longest_edge_m"] == pytest.approx(0.3, rel=1e-5)
    assert summary["view"]["box_xyxy"] == [20.0, 10.0, 50.0, 40.0]
    assert sorted(p.name for p in (tmp_path / "o1").iterdir()) == ["x.json"]
    code, _, err = run(capsys, "--ckpt", str(checkpoint), str(tmp_path / "x.png"), "--out", str(tmp_path / "o2"),
                       "--box", "20,10,50,40", "--zoom", "fit", "--format", "json", "--no-progress")
    assert code == 0, err
    view = json.loads((tmp_path / "o2" / "x.json").read_text())["view"]
    assert view["box_xyxy"] == [20.0, 10.0, 50.0, 40.0] and view["zoom"] > 1.0


def test_empty_mask_fails_that_input_only(checkpoint, tmp_path, capsys):
    good_image(tmp_path / "a.png", 3)
    good_image(tmp_path / "b.png", 4)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "empty.png")
    full = np.full((64, 64), 255, np.uint8)
    Image.fromarray(full).save(tmp_path / "full.png")
    code, _, err = run(capsys, "--ckpt", str(checkpoint), str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                       "--mask", str(tmp_path / "empty.png"), str(tmp_path / "full.png"), "--out", str(tmp_path / "o"),
                       "--format", "ply", "--no-progress")
    assert code == predict_cli.EXIT_SOME_FAILED and "empty.png: mask is empty" in err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["b.ply"]


@pytest.mark.parametrize("hint", ["0", "-0.1", "abc", "nan", "inf"])
def test_bad_scale_hint_is_one_line_exit_2(checkpoint, tmp_path, capsys, hint):
    good_image(tmp_path / "a.png", 5)
    code, _, err = run(capsys, "--ckpt", str(checkpoint), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                       f"--scale-hint={hint}")
    assert code == 2 and err.count("\n") == 1 and "--scale-hint must be a positive number" in err


def test_unwritable_output_folder_is_one_line_exit_2(checkpoint, tmp_path, capsys):
    good_image(tmp_path / "a.png", 6)
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        code, _, err = run(capsys, "--ckpt", str(checkpoint), str(tmp_path / "a.png"), "--out", str(out))
        assert code == 2 and err.count("\n") == 1 and "output folder" in err
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _, err = run(capsys, "--ckpt", str(checkpoint), str(tmp_path / "a.png"), "--out", str(locked))
        assert code == 2 and "not writable" in err


class Payload:
    """Any class instance in a checkpoint needs pickle to load: refused by weights_only loading."""


def test_untrusted_and_foreign_checkpoints_are_one_line_exit_2(checkpoint, tmp_path, capsys):
    good_image(tmp_path / "a.png", 7)
    payload = torch.load(checkpoint, weights_only=True)
    cases = {
        "pickled.pt": ({**payload, "extra": Payload()}, "refused to load"),
        "future.pt": ({**payload, "format_version": 99}, "format 99 is not supported"),
        "other_model.pt": ({**payload, "model": {"backbone.weight": torch.zeros(1)}}, "does not match this model"),
        "not_pointstn.pt": ({"weights": torch.zeros(2)}, "is not a pointstn checkpoint"),
    }
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / name)
        code, _, err = run(capsys, "--ckpt", str(tmp_path / name), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"))
        assert code == 2 and err.count("\n") == 1 and message in err, (name, err)
    (tmp_path / "truncated.pt").write_bytes(checkpoint.read_bytes()[:1000])
    code, _, err = run(capsys, "--ckpt", str(tmp_path / "truncated.pt"), str(tmp_path / "a.png"), "--out",
                       str(tmp_path / "o"))
    assert code == 2 and "corrupt or truncated" in err
    assert not list((tmp_path / "o").iterdir())
    assert zipfile.is_zipfile(checkpoint)  # the fixture really is a torch zip checkpoint


def test_failed_output_removes_that_inputs_other_files(checkpoint, tmp_path, capsys, monkeypatch):
    good_image(tmp_path / "a.png", 8)
    good_image(tmp_path / "b.png", 9)
    from pointstn.io import html

    real = html.write_cloud_viewer

    def flaky(path, *args, **kwargs):
        if "b" in os.path.basename(path):
            raise PointstnError(f"cannot write {path}: No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(html, "write_cloud_viewer", flaky)
    code, _, err = run(capsys, "--ckpt", str(checkpoint), str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                       "--out", str(tmp_path / "o"), "--no-progress")
    assert code == predict_cli.EXIT_SOME_FAILED and "No space left on device" in err
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == sorted(f"a.{e}" for e in ("ply", "npz", "png", "html", "json"))


def test_no_inputs_and_unknown_format(checkpoint, tmp_path, capsys):
    code, _, err = run(capsys, "--ckpt", str(checkpoint), str(tmp_path / "*.png"), "--out", str(tmp_path / "o"))
    assert code == 2 and "no input images found" in err
    good_image(tmp_path / "a.png", 10)
    code, _, err = run(capsys, "--ckpt", str(checkpoint), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                       "--format", "ply,obj")
    assert code == 2 and "unknown output format 'obj'" in err


def test_repeated_stems_get_distinct_names():
    from pathlib import Path

    assert predict_cli.unique_stems([Path("a/x.png"), Path("b/x.jpg"), Path("y.png"), Path("c/x.png")]) == \
        ["x", "x-2", "y", "x-3"]


def test_a_failed_rerun_keeps_the_earlier_outputs(checkpoint, tmp_path, capsys, monkeypatch):
    good_image(tmp_path / "a.png", 8)
    argv = ("--ckpt", str(checkpoint), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--no-progress")
    assert run(capsys, *argv)[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    from pointstn.io import html

    def full_disk(path, *args, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(html, "write_cloud_viewer", full_disk)
    code, _, err = run(capsys, *argv)
    assert code != 0 and "No space left on device" in err
    after = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    assert after == before  # the first run's five files, byte for byte; nothing half-written beside them
