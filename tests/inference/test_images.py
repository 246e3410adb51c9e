"""Input loading policy: corrupt files, pixel modes, size limits (checked before decoding), masks, boxes."""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from pointstn.inference.images import (
    MAX_PIXELS,
    MIN_SIDE,
    ImageInputError,
    check_box,
    find_images,
    load_image,
    load_images,
    load_mask,
    mask_box,
    parse_box,
)


def random_rgb(seed: int, height: int = 48, width: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but which holds (almost) no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_rgb_png_round_trips(tmp_path):
    rgb = random_rgb(0)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert np.array_equal(image.rgb, rgb) and image.mask is None and image.name == str(tmp_path / "a.png")
    assert not image.rgb.flags.writeable


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_unreadable_files_are_one_line_errors(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageInputError, match="bad.png: cannot read image") as info:
        load_image(path)
    assert "\n" not in str(info.value)


def test_truncated_png_is_refused(tmp_path):
    Image.fromarray(random_rgb(1, 200, 200)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match="cut.png: cannot read image"):
        load_image(tmp_path / "cut.png")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageInputError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageInputError, match="is a directory"):
        load_image(tmp_path)


def test_grayscale_is_replicated(tmp_path):
    gray = random_rgb(2)[..., 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    image = load_image(tmp_path / "g.png")
    assert np.array_equal(image.rgb, np.repeat(gray[..., None], 3, axis=2))


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits(tmp_path):
    values = np.random.default_rng(3).integers(0, 65536, (40, 50), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    image = load_image(tmp_path / "g16.png")
    reference = np.floor(values.astype(np.float64) / 257.0 + 0.5)  # round half up; /257 never hits .5 exactly
    assert np.array_equal(image.rgb[..., 1], reference.astype(np.uint8))
    assert np.array_equal(load_image(values).rgb, image.rgb)  # numpy uint16: same policy


def test_rgba_is_composited_on_white_and_alpha_becomes_the_mask(tmp_path):
    rng = np.random.default_rng(4)
    rgba = rng.integers(0, 256, (40, 44, 4), dtype=np.uint8)
    rgba[:5, :, 3] = 0
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    alpha = rgba[..., 3:4].astype(np.float64) / 255.0
    reference = rgba[..., :3] * alpha + 255.0 * (1 - alpha)
    assert np.abs(image.rgb.astype(np.float64) - reference).max() <= 0.5 + 1e-3
    assert image.mask_from_alpha and np.array_equal(image.mask, rgba[..., 3] >= 128)
    opaque = rgba.copy()
    opaque[..., 3] = 255
    assert load_image(opaque).mask is None


def test_fully_transparent_image_is_refused():
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    with pytest.raises(ImageInputError, match="fully transparent"):
        load_image(rgba)


def test_float_tiff_mode_is_refused(tmp_path):
    Image.fromarray(np.random.default_rng(5).random((40, 40)).astype(np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(ImageInputError, match="pixel mode 'F' is not supported"):
        load_image(tmp_path / "f.tif")


def test_size_limits(tmp_path):
    with pytest.raises(ImageInputError, match=f">= {MIN_SIDE} px"):
        load_image(np.zeros((MIN_SIDE - 1, 200, 3), np.uint8))
    assert load_image(np.zeros((MIN_SIDE, MIN_SIDE, 3), np.uint8)).size == (MIN_SIDE, MIN_SIDE)
    side = int(np.ceil(np.sqrt(MAX_PIXELS))) + 1
    (tmp_path / "bomb.png").write_bytes(png_header_only(side, side))
    start = time.perf_counter()
    with pytest.raises(ImageInputError, match="megapixels; the limit is 50 megapixels"):
        load_image(tmp_path / "bomb.png")
    assert time.perf_counter() - start < 1.0  # refused from the header, nothing decoded
    # PIL's own bomb limit (about 179 MP): still our one-line error
    (tmp_path / "bigger.png").write_bytes(png_header_only(20000, 20000))
    with pytest.raises(ImageInputError, match="bigger.png"):
        load_image(tmp_path / "bigger.png")


def test_exif_orientation_is_applied(tmp_path):
    rgb = random_rgb(6, 40, 60)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif, quality=95)
    assert load_image(tmp_path / "r.jpg").size == (60, 40)


def test_arrays_and_tensors():
    rgb = random_rgb(7)
    loaded = load_image(rgb)
    assert np.array_equal(loaded.rgb, rgb) and not np.shares_memory(loaded.rgb, rgb)
    assert rgb.flags.writeable  # the caller's array is left alone
    assert np.array_equal(load_image(rgb / 255.0).rgb, rgb)
    assert np.array_equal(load_image(torch.from_numpy(rgb).permute(2, 0, 1)).rgb, rgb)
    assert np.array_equal(load_image(rgb[..., 0]).rgb[..., 2], rgb[..., 0])
    batch = load_images(torch.from_numpy(np.stack([rgb, rgb[::-1]])).permute(0, 3, 1, 2).float() / 255)
    assert [b.name for b in batch] == ["image[0]", "image[1]"] and np.array_equal(batch[1].rgb, rgb[::-1])
    with pytest.raises(ImageInputError, match="must lie in \\[0, 1\\]"):
        load_image(rgb * 1.0)
    with pytest.raises(ImageInputError, match="NaN"):
        load_image(np.full((40, 40, 3), np.nan))
    with pytest.raises(ImageInputError, match="channels-first"):
        load_image(np.zeros((3, 40, 40), np.uint8))
    with pytest.raises(ImageInputError, match="unsupported image dtype"):
        load_image(np.zeros((40, 40, 3), np.int64))
    with pytest.raises(ImageInputError, match="unsupported image type"):
        load_image(12)


def test_masks(tmp_path):
    mask = np.zeros((40, 50), dtype=bool)
    mask[10:20, 5:30] = True
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m255.png")
    Image.fromarray(mask.astype(np.uint8)).save(tmp_path / "m01.png")
    for source in (tmp_path / "m255.png", tmp_path / "m01.png", mask, mask.astype(np.float32),
                   torch.from_numpy(mask)):
        assert np.array_equal(load_mask(source, size=(40, 50), name="x"), mask)
    assert mask_box(mask) == (5.0, 10.0, 30.0, 20.0)
    with pytest.raises(ImageInputError, match="mask is empty"):
        load_mask(np.zeros((40, 50)), size=(40, 50), name="x")
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(ImageInputError, match="empty.png: mask is empty"):
        load_mask(tmp_path / "empty.png", size=(40, 50), name="x")
    with pytest.raises(ImageInputError, match="must match"):
        load_mask(mask, size=(50, 40), name="x")


def test_boxes():
    assert check_box((1, 2, 30, 40), size=(40, 30), name="x") == (1.0, 2.0, 30.0, 40.0)
    for bad in [(0, 0, 31, 10), (5, 5, 5, 10), (-1, 0, 10, 10), (0, 0, float("nan"), 10), (1, 2, 3)]:
        with pytest.raises(ImageInputError, match="box"):
            check_box(bad, size=(40, 30), name="x")
    assert parse_box(" 1,2.5, 3,4") == (1.0, 2.5, 3.0, 4.0)
    for bad in ["1,2,3", "a,b,c,d", ""]:
        with pytest.raises(ImageInputError, match="--box"):
            parse_box(bad)


def test_find_images(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    found = find_images([str(tmp_path), str(tmp_path / "*.png"), str(tmp_path / "missing.png")])
    assert [p.name for p in found] == ["a.jpg", "b.png", "missing.png"]
