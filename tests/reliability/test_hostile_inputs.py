"""Hostile and malformed inputs: each is refused with one clear line, nothing runs, nothing is allocated.

Complements the per-module tests (tests/io/test_ply.py: lying PLY headers and a PLY fuzz; tests/io/test_npz.py;
tests/data/test_ingest.py: NaN/inf vertices and meshes claiming 10^9 faces; tests/inference/test_images.py:
header-only decompression bombs) with what crosses module boundaries: checkpoints that look right but
carry code, YAML that expands or recurses, absurd values through the command line, dataset manifests
and object files crafted to escape the folder or to exhaust memory.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from pointstn.config import ConfigError, ExperimentConfig, dump_config, load_config
from pointstn.config.load import MAX_YAML_DEPTH, MAX_YAML_NODES
from pointstn.data import format as data_format
from pointstn.data.dataset import PreparedDataset
from pointstn.data.format import MANIFEST_NAME, read_manifest, read_object, verify_dataset
from pointstn.engine.checkpoint import FORMAT, FORMAT_VERSION, CheckpointError, load_checkpoint
from pointstn.errors import PointstnError
from pointstn.inference.images import MAX_PIXELS, MIN_SIDE, ImageInputError, load_image
from tests.reliability.conftest import assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parents[2]
FAST_S = 10.0  # refusals are decided from headers/structure in milliseconds; a bomb would take minutes or OOM


# --- checkpoints --------------------------------------------------------------------------------------

class CreatesFile:
    """Unpickling this object opens (and so creates) `path`: proof that code ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def well_formed_payload(**changes) -> dict:
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "pointstn_version": "0.0",
               "config_yaml": dump_config(ExperimentConfig()), "step": 1, "model": {"w": torch.zeros(2)}}
    payload.update(changes)
    return payload


def test_pickled_code_in_a_well_formed_checkpoint_is_refused_everywhere_and_never_runs(tmp_path, tiny_dataset):
    """The payload hides in the optimizer state of an otherwise perfect checkpoint. Loading it directly,
    predicting with it and resuming training from it all refuse it with one line; the file is never made."""
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    torch.save(well_formed_payload(optimizer={"state": {0: CreatesFile(marker)}}), evil)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(evil)
    image = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(image)
    predicted = run_cli("predict", "--ckpt", str(evil), str(image), "--out", str(tmp_path / "out"), "--no-progress")
    assert_one_line_error(predicted, code=2, contains="refused to load")
    resumed = run_cli("train", str(REPO / "configs" / "smoke.yaml"), f"data.root={tiny_dataset}",
                      "--out", str(tmp_path / "run"), "--resume", str(evil), "--no-progress")
    assert_one_line_error(resumed, code=2, contains="refused to load")
    assert not marker.exists()
    assert not (tmp_path / "run" / "last.pt").exists()


def test_every_truncation_of_a_checkpoint_is_one_checkpoint_error(small_checkpoint, tmp_path):
    data = small_checkpoint.read_bytes()
    cuts = sorted({0, 1, 4, 22, 64, 512, *np.linspace(0, len(data) - 1, 40).astype(int).tolist()})
    for cut in cuts:
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert len(cuts) >= 40


@pytest.mark.parametrize("changes, message", [
    ({"config_yaml": 5}, "'config_yaml' should be the config as YAML text"),
    ({"config_yaml": "train: {lr: .nan}\n"}, "must be a finite number"),
    ({"config_yaml": "a: &a [*a]\n"}, "recursive YAML"),
    ({"step": "7"}, "'step' should be a non-negative integer"),
    ({"step": -1}, "'step' is negative"),
    ({"step": torch.tensor([1, 2])}, "'step' should be a non-negative integer"),
    ({"model": [torch.zeros(1)]}, "'model' should be a mapping"),
    ({"model": {"w": 3}}, "model entry 'w' is not a named tensor"),
    ({"pointstn_version": torch.zeros(1)}, "'pointstn_version' should be a version string"),
    ({"format_version": 99}, "format 99 is not supported"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_structurally_damaged_checkpoints_are_one_line_errors(tmp_path, changes, message):
    path = tmp_path / "damaged.pt"
    torch.save(well_formed_payload(**changes), path)
    with pytest.raises(PointstnError) as info:
        load_checkpoint(path)
    assert message in str(info.value) and str(path) in str(info.value)


# --- YAML configs ----------------------------------------------------------------------------------------

def billion_laughs(levels: int, width: int = 10) -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def mapping_laughs(levels: int, width: int = 10) -> str:
    lines = ["m0: &m0 {a: 1, b: 2}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} {{{', '.join(f'k{j}: *m{i - 1}' for j in range(width))}}}")
    return "\n".join(lines) + "\n"


HOSTILE_YAML = {
    "billion_laughs_lists": (billion_laughs(9), "more than 100000 values"),
    "billion_laughs_mappings": (mapping_laughs(9), "more than 100000 values"),
    "recursive_mapping": ("train: &t {lr: 0.1, again: *t}\n", "recursive"),
    "recursive_list": ("eval: {frames: &f [shape, *f]}\n", "recursive"),
    "deep_nesting": ("train: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    "nesting_past_the_limit": ("train: " + "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1) + "\n", "deeper"),
    "integer_of_5000_digits": ("train: {max_steps: 1" + "0" * 5000 + "}\n", "4300 digits"),
    "python_apply": ("name: !!python/object/apply:builtins.open ['{marker}', 'w']\n", "cannot be parsed as safe YAML"),
    "python_new": ("name: !!python/object/new:builtins.open ['{marker}', 'w']\n", "cannot be parsed as safe YAML"),
    "python_name": ("name: !!python/name:os.system\n", "cannot be parsed as safe YAML"),
    "python_module": ("name: !!python/module:os\n", "cannot be parsed as safe YAML"),
    "binary_where_a_string_goes": ("name: !!binary aGVsbG8=\n", "expected a string"),
    "set_where_a_list_goes": ("eval: {frames: !!set {shape: null}}\n", "expected a list"),
    "non_string_key": ("train: {? [1, 2] : 3}\n", "config keys must be strings"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_YAML))
def test_hostile_yaml_is_refused_fast_and_builds_nothing(tmp_path, name):
    marker = tmp_path / "code_ran"
    text, message = HOSTILE_YAML[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace("{marker}", str(marker)))
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path, ExperimentConfig)
    assert time.perf_counter() - start < FAST_S
    assert message in str(info.value) and str(path) in str(info.value), str(info.value)
    assert not marker.exists()


def test_the_node_limit_leaves_room_for_every_real_config():
    largest = max(len(dump_config(load_config(p, ExperimentConfig)).split()) for p in REPO.glob("configs/*.yaml"))
    assert largest * 20 < MAX_YAML_NODES  # a resolved config has ~100 values


@pytest.mark.parametrize("kind, override, key", [
    ("experiment", "data.image_size=-64", "data.image_size"),
    ("experiment", "model.decoder.resolution=1000000", "model.decoder.resolution"),
    ("experiment", "train.lr=.nan", "train.lr"),
    ("experiment", "train.lr=nan", "train.lr"),
    ("experiment", "train.lr=.inf", "train.lr"),
    ("experiment", "train.lr=1e400", "train.lr"),
    ("experiment", "train.batch_size=0", "train.batch_size"),
    ("experiment", "model.num_output_points=1000000000", "model.num_output_points"),
    ("experiment", "data.num_gt_points=-5", "data.num_gt_points"),
    ("experiment", "train.max_steps=1e3", "train.max_steps"),
    ("dataset", "views_per_object=0", "views_per_object"),
    ("dataset", "num_surface_points=100000000", "num_surface_points"),
    ("dataset", "splits.train=-1", "splits.train"),
])
def test_absurd_values_on_the_command_line_are_one_line_errors_naming_the_key(tmp_path, kind, override, key):
    config = REPO / "configs" / ("smoke.yaml" if kind == "experiment" else "data/graspable_demo.yaml")
    result = run_cli("config", str(config), override, "--kind", kind)
    line = assert_one_line_error(result, code=2, contains=f"'{key}'")
    assert result.stdout == "", line


@pytest.mark.parametrize("overrides, message", [
    (["rig.image_size=1000000"], "Rig.image_size must be an integer in [8, 1024]"),  # the rig's own bound
    (["rig.image_size=1024", "views_per_object=1000"], "MAX_OBJECT_BYTES"),  # in bounds alone, too big together
])
def test_absurd_render_sizes_are_refused_before_any_work(tmp_path, overrides, message):
    out = tmp_path / "data"
    result = run_cli("prepare-data", "--config", str(REPO / "configs/data/graspable_demo.yaml"),
                     *overrides, "--out", str(out), "--no-progress")
    assert_one_line_error(result, code=2, contains=message)
    assert not out.exists()


# --- images ------------------------------------------------------------------------------------------------

def png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def bmp_header(width: int, height: int) -> bytes:
    """A 24-bit BMP whose header claims width x height over 64 bytes of pixels."""
    pixels = b"\x00" * 64
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info)) + info + pixels


def gif_header(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + image + b"\x3b"


def deflate_bomb_png(width: int, height: int) -> bytes:
    """A real, decodable all-black PNG: a few KB on disk, width * height * 3 bytes once decoded."""
    rows = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * (3 * width)
    body = b"".join(rows.compress(row) for _ in range(height)) + rows.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.parametrize("make, width, height, message", [
    (png_header, 100_000, 100_000, "the limit is 50 megapixels"),
    (png_header, 2**31 - 1, 2**31 - 1, "the limit is 50 megapixels"),
    (bmp_header, 60_000, 60_000, "the limit is 50 megapixels"),
    (gif_header, 65_535, 65_535, "the limit is 50 megapixels"),
    (png_header, 1, 1_000_000, f">= {MIN_SIDE} px"),
    (bmp_header, 100_000, 2, f">= {MIN_SIDE} px"),
])
def test_absurd_image_dimensions_are_refused_from_the_header(tmp_path, make, width, height, message):
    path = tmp_path / f"absurd.{make.__name__.split('_')[0]}"
    path.write_bytes(make(width, height))
    start = time.perf_counter()
    with pytest.raises(ImageInputError) as info:
        load_image(path)
    assert time.perf_counter() - start < FAST_S
    assert message in str(info.value) and str(path) in str(info.value)


def test_a_real_decompression_bomb_over_the_limit_is_refused_and_one_under_it_decodes(tmp_path):
    side = int(np.sqrt(MAX_PIXELS)) + 100  # just over the documented limit: 7171^2 = 51.4 MP
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(deflate_bomb_png(side, side))
    assert bomb.stat().st_size < 200_000  # ~150 MB of pixels in a small file
    with pytest.raises(ImageInputError, match="the limit is 50 megapixels"):
        load_image(bomb)
    fine = tmp_path / "fine.png"
    fine.write_bytes(deflate_bomb_png(640, 480))
    assert load_image(fine).size == (480, 640)


def test_an_image_bomb_among_good_inputs_fails_only_itself_on_the_command_line(small_checkpoint, tmp_path):
    from PIL import Image

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(inputs / "good.png")
    (inputs / "bomb.png").write_bytes(png_header(100_000, 100_000))
    result = run_cli("predict", "--ckpt", str(small_checkpoint), str(inputs), "--out", str(tmp_path / "out"),
                     "--no-progress", "--num-points", "64", "--format", "ply")
    assert_one_line_error(result, code=1, contains="bomb.png")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.ply"]


# --- datasets: manifests and object files ------------------------------------------------------------------

def edit_manifest(root: Path, edit) -> None:
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    edit(manifest)
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))


def first_object(manifest: dict) -> dict:
    return manifest["objects"][manifest["splits"]["train"][0]]


MANIFEST_EDITS = {
    "parent_path": (lambda m: first_object(m).update(file="../../../etc/passwd"), "escapes the dataset folder"),
    "absolute_path": (lambda m: first_object(m).update(file="/etc/passwd"), "escapes the dataset folder"),
    "other_object_file": (lambda m: first_object(m).update(file="objects/mug_0000.npz"), "is not objects/"),
    "id_with_slash": (lambda m: m["objects"].update({"../x": m["objects"].popitem()[1]}), "is not a plain name"),
    "billion_views": (lambda m: first_object(m).update(num_views=10**9), "num_views is 1000000000"),
    "objects_as_list": (lambda m: m.update(objects=[1, 2]), "'objects' must be a mapping"),
    "record_as_string": (lambda m: m["objects"].update({m["splits"]["train"][0]: "x"}), "record must be a mapping"),
    "nan_extents": (lambda m: first_object(m).update(extents=[1, float("nan"), 1]), "'extents' must be three"),
    "split_names_a_stranger": (lambda m: m["splits"]["train"].append("ghost"), "lists 'ghost'"),
    "object_in_two_splits": (lambda m: m["splits"]["val"].append(m["splits"]["train"][0]), "split 'val' lists"),
    "rig_differs_from_config": (lambda m: m["rig"].update(image_size=10**6), "'rig' does not match"),
    "config_with_absurd_value": (lambda m: m["config"].update(views_per_object=-3), "'views_per_object'"),
    "complete_as_string": (lambda m: m.update(complete="yes"), "'complete' must be true or false"),
}


@pytest.mark.parametrize("name", sorted(MANIFEST_EDITS))
def test_crafted_manifests_are_refused_by_every_reader(dataset_copy, name):
    edit, message = MANIFEST_EDITS[name]
    edit_manifest(dataset_copy, edit)
    for read in (lambda: read_manifest(dataset_copy), lambda: PreparedDataset(dataset_copy, split="train"),
                 lambda: verify_dataset(dataset_copy)):
        with pytest.raises(PointstnError) as info:
            read()
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
    result = run_cli("verify", str(dataset_copy))
    assert_one_line_error(result, code=2, contains=message)


def test_an_object_file_that_is_a_symlink_out_of_the_dataset_is_refused(dataset_copy, tmp_path):
    manifest = read_manifest(dataset_copy)
    victim = dataset_copy / first_object(manifest)["file"]
    outside = tmp_path / "outside.npz"
    outside.write_bytes(victim.read_bytes())
    victim.unlink()
    victim.symlink_to(outside)
    with pytest.raises(PointstnError, match="escapes the dataset folder"):
        PreparedDataset(dataset_copy, split="train")[0]
    with pytest.raises(PointstnError, match="escapes the dataset folder"):
        verify_dataset(dataset_copy)


def npy_bytes(shape: tuple, dtype: str, payload: bytes) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


def replace_member(path: Path, name: str, data: bytes, *, compress: bool) -> None:
    """Rewrite the object NPZ at `path` with member `name` replaced by `data`."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members[name] = data
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        for member, content in members.items():
            archive.writestr(member, content)


def test_an_object_array_claiming_terabytes_is_refused_before_allocation(dataset_copy):
    path = dataset_copy / first_object(read_manifest(dataset_copy))["file"]
    replace_member(path, "surface_points.npy", npy_bytes((10**12, 3), "<f4", b"\0" * 96), compress=False)
    start = time.perf_counter()
    with pytest.raises(PointstnError, match=r"claims shape \(1000000000000, 3\)"):
        PreparedDataset(dataset_copy, split="train")[0]
    assert time.perf_counter() - start < FAST_S
    assert len(verify_dataset(dataset_copy)) == 1  # and its hash no longer matches


def test_a_deflate_bomb_object_is_refused_by_the_size_limit(dataset_copy, monkeypatch):
    """A consistent member (header and data agree) that inflates 1000-fold: bounded by MAX_OBJECT_BYTES,
    lowered here to 8 MB so the test builds a 16 MB bomb instead of a 2 GB one."""
    monkeypatch.setattr(data_format, "MAX_OBJECT_BYTES", 8 << 20)
    path = dataset_copy / first_object(read_manifest(dataset_copy))["file"]
    count = (16 << 20) // 12
    replace_member(path, "surface_points.npy", npy_bytes((count, 3), "<f4", bytes(count * 12)), compress=True)
    assert path.stat().st_size < 200_000
    with pytest.raises(PointstnError, match="more than the limit of 8388608 bytes \\(MAX_OBJECT_BYTES\\)"):
        read_object(path)


def test_the_object_size_limit_is_enforced_when_writing_too(tmp_path, monkeypatch):
    from pointstn.data.format import ObjectRecord, write_object

    monkeypatch.setattr(data_format, "MAX_OBJECT_BYTES", 1000)
    record = ObjectRecord(object_id="big", split="train", family="box", symmetry="none", source="test", params={},
                          num_views=1, view_bins=("canonical",), extents=(1.0, 1.0, 1.0), volume_target=None,
                          volume_material=None, volume_capacity=None, volume_note="")
    arrays = {name: np.zeros([1 if isinstance(d, str) else (d or 1) for d in shape], dtype="<U9" if dtype == "str" else dtype)
              for name, (dtype, shape) in data_format.OBJECT_ARRAYS.items()}
    arrays["images"] = np.zeros((1, 32, 32, 3), np.uint8)
    (tmp_path / "objects").mkdir()
    with pytest.raises(PointstnError, match="MAX_OBJECT_BYTES"):
        write_object(tmp_path, arrays, record)
    assert os.listdir(tmp_path / "objects") == []
