"""Loading and validating prediction inputs: images, masks and boxes, from files or memory.

Every image becomes an `InputImage`: (H, W, 3) uint8 RGB plus an optional object mask. Policy for
what arrives (docs/ROBOTICS.md repeats it):

- Size: at least MIN_SIDE pixels on the shorter side and at most MAX_PIXELS pixels. For files the
  size is read from the header and checked *before* the pixels are decoded (decompression bombs);
  headers beyond Pillow's own bomb bound (2 x Image.MAX_IMAGE_PIXELS) are refused by Pillow as it
  opens them, with the same one-line message naming MAX_PIXELS. Decoded, an accepted image takes at
  most MAX_PIXELS x 4 bytes (RGBA) = 200 MB.
- Grayscale ("L", "1", 16-bit "I;16"/"I") is replicated to three channels; 16-bit values become
  8-bit as round(v / 257). Palette images are expanded. CMYK and YCbCr are converted to RGB.
  32-bit float images ("F") and other modes are refused with a message naming the mode.
- RGBA / LA / palette with transparency: composited over white (the rig's plain background), and
  the alpha channel (alpha >= 128) becomes the object mask when no mask or box is given and at least
  one pixel is transparent. A fully transparent image is refused (no object).
- EXIF orientation is applied (phone photos).
- Arrays: numpy (H, W), (H, W, C) or (B, H, W, C) with C in 1, 3, 4; torch (C, H, W) or (B, C, H, W).
  uint8 as is, uint16 as above, floats must be finite and within [0, 1] (rounded to 8 bits).
- Masks: a file, PIL image, numpy or torch array of the image's size. Booleans as given, integers
  nonzero, floats > 0.5; mask files are thresholded at 128 unless their largest value is 1 (label
  images). An empty mask (no object pixel) is an error.
- Boxes: (x0, y0, x1, y1) pixel edge coordinates (x1, y1 exclusive), inside the image, non-empty.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pointstn.errors import PointstnError

MIN_SIDE = 32
MAX_PIXELS = 50_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# What Pillow raises on damaged or hostile files (decoders differ; all mean "not a usable image").
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, KeyError,
                  TypeError, MemoryError)


class ImageInputError(PointstnError):
    """An input image, mask or box that cannot be used; the message names it."""


@dataclass(frozen=True, eq=False)
class InputImage:
    """One validated input.

    rgb: (H, W, 3) uint8, read-only.
    mask: (H, W) bool object mask, or None.
    name: where it came from (a path or "image[i]").
    mask_from_alpha: the mask is the image's own alpha channel.
    """

    rgb: np.ndarray
    mask: np.ndarray | None
    name: str
    mask_from_alpha: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


def check_size(height: int, width: int, name: str) -> None:
    """Refuse images outside [MIN_SIDE, ...] x [..., MAX_PIXELS] (message names the limit)."""
    if min(height, width) < MIN_SIDE:
        raise ImageInputError(f"{name}: image is {width}x{height} px; the shorter side must be >= {MIN_SIDE} px")
    if height * width > MAX_PIXELS:
        raise ImageInputError(f"{name}: image is {width}x{height} = {height * width / 1e6:.1f} megapixels; "
                              f"the limit is {MAX_PIXELS / 1e6:.0f} megapixels")


def _open_checked(path: str | os.PathLike[str]):
    """Open with Pillow, check the header's size, then decode; every failure is one ImageInputError."""
    from PIL import Image, ImageOps

    name = os.fspath(path)
    if not os.path.exists(name):
        raise ImageInputError(f"{name}: no such file")
    if os.path.isdir(name):
        raise ImageInputError(f"{name}: is a directory, not an image")
    image = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(name)
            width, height = image.size
            check_size(height, width, name)  # from the header: nothing decoded yet
            image.load()
            upright = ImageOps.exif_transpose(image)
        if upright is not image:
            image.close()
        return upright
    except ImageInputError:
        if image is not None:
            image.close()
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if image is not None:
            image.close()
        detail = " ".join(str(exc).split())[:160]
        raise ImageInputError(f"{name}: refused as a decompression bomb: more megapixels than Pillow's own bound; "
                              f"the limit is {MAX_PIXELS / 1e6:.0f} megapixels ({detail})") from None
    except PermissionError:
        raise ImageInputError(f"{name}: permission denied") from None
    except _DECODE_ERRORS as exc:
        if image is not None:
            image.close()
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ImageInputError(f"{name}: cannot read image (corrupt, truncated or not an image: {detail})") from None


def _sixteen_to_eight(values: np.ndarray, name: str) -> np.ndarray:
    if values.min() < 0 or values.max() > 65535:
        raise ImageInputError(f"{name}: integer pixel values outside the 16-bit range [0, 65535]")
    return np.rint(values.astype(np.float64) / 257.0).astype(np.uint8)


def _from_pil(image, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb (H, W, 3) uint8, alpha (H, W) uint8 or None) from a decoded PIL image (policy above)."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(image.convert("RGBA"))
        return rgba[..., :3], rgba[..., 3]
    if mode in ("RGB", "L", "1", "CMYK", "YCbCr"):
        return np.asarray(image.convert("RGB")), None
    if mode.startswith("I;16") or mode == "I":
        gray = _sixteen_to_eight(np.asarray(image).astype(np.int64), name)
        return np.repeat(gray[..., None], 3, axis=2), None
    raise ImageInputError(f"{name}: pixel mode {mode!r} is not supported (use 8- or 16-bit RGB, RGBA or grayscale)")


def _composite(rgb: np.ndarray, alpha: np.ndarray | None, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Composite over white; returns (rgb, alpha mask or None when fully opaque)."""
    if alpha is None or (alpha == 255).all():
        return np.array(rgb, dtype=np.uint8, copy=True), None  # a copy: the caller's array stays theirs
    if (alpha == 0).all():
        raise ImageInputError(f"{name}: the alpha channel is fully transparent (no object to reconstruct)")
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = np.rint(rgb.astype(np.float32) * a + 255.0 * (1.0 - a)).astype(np.uint8)
    return out, alpha >= 128


def _from_array(values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W), (H, W, C) with C in 1, 3, 4 -> (rgb, alpha or None), dtype policy above."""
    if values.ndim == 2:
        values = values[..., None]
    if values.ndim != 3 or values.shape[2] not in (1, 3, 4):
        raise ImageInputError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image array; got shape "
                              f"{values.shape} (channels-first numpy arrays are not accepted; use torch for CHW)")
    check_size(values.shape[0], values.shape[1], name)
    if values.dtype == np.uint8:
        pixels = values
    elif values.dtype == np.uint16:
        pixels = _sixteen_to_eight(values, name)
    elif values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise ImageInputError(f"{name}: image holds NaN or inf values")
        if values.min() < 0.0 or values.max() > 1.0:
            raise ImageInputError(f"{name}: float images must lie in [0, 1]; got [{values.min()}, {values.max()}]")
        pixels = np.rint(values.astype(np.float64) * 255.0).astype(np.uint8)
    else:
        raise ImageInputError(f"{name}: unsupported image dtype {values.dtype} (use uint8, uint16 or float in [0, 1])")
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2), None
    if pixels.shape[2] == 4:
        return pixels[..., :3], pixels[..., 3]
    return pixels, None


def split_batch(images: Any) -> list[tuple[Any, str]]:
    """Flatten the accepted containers (a single image, a list, (B, H, W, C) numpy, (B, C, H, W) torch)
    into (single image, name) pairs, without decoding anything."""
    import torch

    if isinstance(images, (str, os.PathLike)):
        return [(images, os.fspath(images))]
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [(images[i], f"image[{i}]") for i in range(images.shape[0])]
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return [(images[i], f"image[{i}]") for i in range(images.shape[0])]
    if isinstance(images, (list, tuple)):
        out: list[tuple[Any, str]] = []
        for item in images:
            for single, name in split_batch(item):
                out.append((single, name if isinstance(item, (str, os.PathLike)) else f"image[{len(out)}]"))
        return out
    return [(images, "image[0]")]


def _tensor_to_hwc(tensor, name: str) -> np.ndarray:
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
        raise ImageInputError(f"{name}: torch images must be (C, H, W) or (B, C, H, W) with C in 1, 3, 4; "
                              f"got {tuple(tensor.shape)}")
    values = tensor.detach().cpu()
    if values.is_floating_point():
        values = values.double()
    return values.permute(1, 2, 0).numpy()


def load_image(source: Any, *, name: str | None = None) -> InputImage:
    """One image from a path, PIL image, numpy array or torch tensor (policy in the module docstring)."""
    import torch
    from PIL import Image

    if isinstance(source, (str, os.PathLike)):
        name = name or os.fspath(source)
        with _open_checked(source) as image:
            rgb, alpha = _from_pil(image, name)
    elif isinstance(source, Image.Image):
        name = name or "image[0]"
        check_size(source.height, source.width, name)
        rgb, alpha = _from_pil(source, name)
    elif isinstance(source, np.ndarray):
        name = name or "image[0]"
        rgb, alpha = _from_array(source, name)
    elif isinstance(source, torch.Tensor):
        name = name or "image[0]"
        rgb, alpha = _from_array(_tensor_to_hwc(source, name), name)
    else:
        raise ImageInputError(f"unsupported image type {type(source).__name__} (use a path, PIL image, numpy array "
                              "or torch tensor)")
    rgb, mask = _composite(rgb, alpha, name)
    rgb.flags.writeable = False
    return InputImage(rgb=rgb, mask=mask, name=name, mask_from_alpha=mask is not None)


def load_images(images: Any) -> list[InputImage]:
    """Every image of a single input or a batch (list, (B, H, W, C) numpy, (B, C, H, W) torch)."""
    return [load_image(single, name=name) for single, name in split_batch(images)]


def load_mask(source: Any, *, size: tuple[int, int], name: str) -> np.ndarray:
    """(H, W) bool object mask of an image of `size` (height, width); refuses empty masks."""
    import torch
    from PIL import Image

    if isinstance(source, (str, os.PathLike)):
        with _open_checked(source) as image:
            values = np.asarray(image.convert("I") if image.mode.startswith("I") else image.convert("L"))
        values = values > 127 if values.max() > 1 else values > 0
        where = os.fspath(source)
    elif isinstance(source, Image.Image):
        values, where = np.asarray(source.convert("L")) > 127, f"mask of {name}"
    else:
        values = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
        where = f"mask of {name}"
        if values.ndim == 3 and values.shape[0] == 1:
            values = values[0]
        if values.dtype == bool:
            pass
        elif values.dtype.kind in "iu":
            values = values != 0
        elif values.dtype.kind == "f":
            values = values > 0.5
        else:
            raise ImageInputError(f"{where}: unsupported mask dtype {values.dtype}")
    if values.shape != tuple(size):
        raise ImageInputError(f"{where}: mask is {values.shape[1] if values.ndim > 1 else '?'}x{values.shape[0]} px, "
                              f"the image {size[1]}x{size[0]} px; they must match")
    if not values.any():
        raise ImageInputError(f"{where}: mask is empty (no object pixel)")
    return np.ascontiguousarray(values, dtype=bool)


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) pixel-edge box of the True pixels of a non-empty (H, W) mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def check_box(box: Sequence[float], *, size: tuple[int, int], name: str) -> tuple[float, float, float, float]:
    """Validate (x0, y0, x1, y1) pixel-edge coordinates inside an image of `size` (height, width)."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ImageInputError(f"{name}: box must be four numbers x0,y0,x1,y1; got {box!r}") from None
    height, width = size
    if not all(np.isfinite([x0, y0, x1, y1])):
        raise ImageInputError(f"{name}: box {box!r} has non-finite values")
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ImageInputError(f"{name}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must satisfy 0 <= x0 < x1 <= {width} "
                              f"and 0 <= y0 < y1 <= {height} (pixel edges of the {width}x{height} image)")
    return x0, y0, x1, y1


def parse_box(text: str) -> tuple[float, float, float, float]:
    """'x0,y0,x1,y1' -> four floats (range checks happen once the image size is known)."""
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ImageInputError(f"--box must be x0,y0,x1,y1 (four numbers); got {text!r}")
    return values  # type: ignore[return-value]


def find_images(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images, sorted, not recursive) and glob patterns -> image paths, in order,
    without duplicates. A path that does not exist and matches nothing is kept (reported when read)."""
    import glob

    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.exists():
            found.append(path)
        elif glob.has_magic(item):
            found += sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
        else:
            found.append(path)
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(os.path.abspath(path), path)
    return list(unique.values())
