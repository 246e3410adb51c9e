"""Property-based fuzzing of the parsers that read untrusted input: only the documented errors may escape.

| parser | input | allowed outcome |
| --- | --- | --- |
| `load_config` | random YAML documents and text, random `key=value` overrides | a config or `ConfigError` |
| `load_image` | mutated PNG/JPEG/BMP/GIF/TIFF/WebP files | an `InputImage` or `ImageInputError` |
| `read_manifest` (+ dataset, verify) | a real manifest with random subtrees replaced or deleted | the data or `PointstnError` |
| `load_checkpoint` | a real checkpoint with random bytes flipped | a `Checkpoint` or `CheckpointError`/`ConfigError` |

PLY and cloud-NPZ parsing are fuzzed in tests/io/test_ply.py and tests/io/test_npz.py. Examples are
bounded (`max_examples`) and derandomized so CI time is fixed and a failure replays.
"""

from __future__ import annotations

import copy
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pointstn.config import ConfigError, ExperimentConfig, load_config
from pointstn.data.dataset import PreparedDataset
from pointstn.data.format import MANIFEST_NAME, read_manifest, verify_dataset
from pointstn.engine.checkpoint import CheckpointError, load_checkpoint
from pointstn.errors import PointstnError
from pointstn.inference.images import ImageInputError, InputImage, load_image

REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --- configs ---------------------------------------------------------------------------------------------

KEYS = ["name", "data", "model", "train", "eval", "loss", "output_dir", "_base_", "decoder", "backbone", "lr",
        "batch_size", "resolution", "channels", "kind", "frames", "image_size", "max_steps", "blocks", "stn",
        "fscore_thresholds", "num_workers", "seed", "<<", "bogus"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.text(max_size=12),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["sparse", "dense", "shape", "group"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
                      max_leaves=20)
DOCUMENTS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6)
YAML_NOISE = st.lists(st.sampled_from([*"abz019_.-: \n\t[]{},&*!|>'\"#%@`~?\x00\x1f\u2028", "!!python/object:os.system ",
                                       "&a ", "*a", "<<: ", "!!binary ", "!!set ", "1e999", ".nan"]),
                      max_size=60).map("".join)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(document=DOCUMENTS, noise=YAML_NOISE, mix=st.sampled_from(["document", "noise", "both"]))
def test_config_loading_gives_a_config_or_a_config_error(scratch, document, noise, mix):
    text = "" if mix == "noise" else yaml.safe_dump(document, allow_unicode=True)
    if mix != "document":
        text = text + noise if mix == "both" else noise
    path = scratch / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        config = load_config(path, ExperimentConfig)
    except ConfigError as exc:
        assert "\n" not in str(exc).strip() or "cannot be parsed" in str(exc)
        return
    assert isinstance(config, ExperimentConfig) and math.isfinite(config.train.lr)


OVERRIDE_KEYS = st.sampled_from(["train.lr", "train.batch_size", "model.decoder.resolution", "model.decoder.channels",
                                 "eval.frames", "name", "output_dir", "data", "model.decoder", "train..lr", "train.lr.x",
                                 "", "=", "model.backbone.blocks", "data.augment", "bogus.key"])
OVERRIDE_VALUES = st.one_of(st.text(max_size=20), st.sampled_from([".nan", "-.inf", "1e400", "[1, 2]", "{a: 1}", "null",
                                                                   "&a [*a]", "!!python/name:os.system", "0x10", "1_000"]))


@FUZZ
@given(overrides=st.lists(st.tuples(OVERRIDE_KEYS, OVERRIDE_VALUES), min_size=1, max_size=3), bare=st.booleans())
def test_command_line_overrides_give_a_config_or_a_config_error(overrides, bare):
    items = [key if bare and i == 0 else f"{key}={value}" for i, (key, value) in enumerate(overrides)]
    try:
        config = load_config(REPO / "configs" / "smoke.yaml", ExperimentConfig, items)
    except ConfigError:
        return
    assert isinstance(config, ExperimentConfig)


# --- images ------------------------------------------------------------------------------------------------

def seed_images() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    files = []
    for suffix, image, options in [
        (".png", Image.fromarray(rgb), {}),
        (".png", Image.fromarray(np.dstack([rgb, np.full((40, 48), 128, np.uint8)]), mode="RGBA"), {}),
        (".jpg", Image.fromarray(rgb), {"quality": 80}),
        (".bmp", Image.fromarray(rgb), {}),
        (".gif", Image.fromarray(rgb).convert("P"), {}),
        (".tif", Image.fromarray((rng.integers(0, 65536, (40, 48))).astype(np.uint16)), {}),
        (".webp", Image.fromarray(rgb), {"quality": 80}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, format={".jpg": "JPEG", ".tif": "TIFF"}.get(suffix, suffix[1:].upper()), **options)
        files.append((suffix, buffer.getvalue()))
    return files


SEED_IMAGES = seed_images()
MUTATION = st.tuples(st.sampled_from(["flip", "set", "cut", "insert", "header_u32"]), st.integers(0, 10**6),
                     st.integers(0, 2**32 - 1))


def mutate(data: bytes, mutations) -> bytes:
    data = bytearray(data)
    for kind, position, value in mutations:
        at = position % max(1, len(data))
        if kind == "flip":
            data[at] ^= 1 << (value % 8)
        elif kind == "set":
            data[at] = value % 256
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = value.to_bytes(4, "little")
        else:  # overwrite a 32-bit field near the start, where dimensions and chunk lengths live
            at = position % max(1, min(len(data) - 4, 64))
            data[at:at + 4] = value.to_bytes(4, "big")
        if not data:
            break
    return bytes(data)


@FUZZ
@given(which=st.integers(0, len(SEED_IMAGES) - 1), mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_image_loading_gives_an_image_or_an_image_input_error(scratch, which, mutations):
    suffix, data = SEED_IMAGES[which]
    path = scratch / f"fuzzed{suffix}"
    path.write_bytes(mutate(data, mutations))
    try:
        image = load_image(path)
    except ImageInputError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert isinstance(image, InputImage) and image.rgb.dtype == np.uint8 and image.rgb.shape[2] == 3


# --- dataset manifests ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manifest_playground(tiny_dataset, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("manifest_fuzz") / "dataset"
    shutil.copytree(tiny_dataset, root)
    return root, json.loads((root / MANIFEST_NAME).read_text())


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=10), st.sampled_from(["../../etc/passwd", "/etc/passwd", "objects/box_0000.npz", "train"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


def subtree_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from subtree_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from subtree_paths(child, (*prefix, index))


@FUZZ
@given(picks=st.lists(st.tuples(st.integers(0, 10**6), st.booleans(), JSON_VALUES), min_size=1, max_size=3),
       trailing_garbage=st.booleans())
def test_manifest_parsing_gives_data_or_a_pointstn_error(manifest_playground, picks, trailing_garbage):
    root, original = manifest_playground
    manifest = copy.deepcopy(original)
    for index, delete, value in picks:
        paths = [p for p in subtree_paths(manifest) if p]
        path = paths[index % len(paths)]
        parent = manifest
        for key in path[:-1]:
            parent = parent[key]
        if delete:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    text = json.dumps(manifest) + ("\x00{" if trailing_garbage else "")
    (root / MANIFEST_NAME).write_text(text)
    try:
        read_manifest(root)
    except PointstnError:
        return
    try:  # a manifest that passes the checks must be safe for every reader
        dataset = PreparedDataset(root, split=None, num_points=64)
        assert len(dataset) > 0 and dataset[0].image.shape[0] == 3
        verify_dataset(root)
    except PointstnError:
        pass


# --- checkpoints -----------------------------------------------------------------------------------------------

@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 7)), min_size=1, max_size=6))
def test_checkpoint_loading_with_flipped_bytes_gives_a_checkpoint_or_one_error(small_checkpoint, scratch, flips):
    data = bytearray(small_checkpoint.read_bytes())
    for position, bit in flips:
        data[position % len(data)] ^= 1 << bit
    path = scratch / "flipped.pt"
    path.write_bytes(bytes(data))
    try:
        load_checkpoint(path)
    except (CheckpointError, ConfigError) as exc:
        assert "\n" not in str(exc).strip()
