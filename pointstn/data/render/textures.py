"""Procedural images: tileable surface textures and image backgrounds, all from a numpy Generator.

Textures are square uint8 RGB images that tile seamlessly (they are sampled with REPEAT wrapping
through the UV projections in ``surface.py``): stripes and checkers use integer frequencies, noise
uses a wrapped lattice. Backgrounds are (H, W, 3) uint8 images composited behind the object mask.

Colours are drawn in HSV with full hue range and broad saturation/value, so neither hue nor
brightness identifies a shape family.
"""

from __future__ import annotations

import numpy as np

TEXTURE_KINDS: tuple[str, ...] = ("solid", "stripes", "checker", "noise", "label")
BACKGROUND_KINDS: tuple[str, ...] = ("plain", "solid", "gradient", "noise")


def random_colors(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 3) float64 RGB in [0, 1]: uniform hue, saturation in [0, 1], value in [0.15, 1]."""
    hue = rng.random(count)
    saturation = rng.random(count)
    value = rng.uniform(0.15, 1.0, count)
    return hsv_to_rgb(np.stack([hue, saturation, value], axis=1))


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """(N, 3) HSV in [0, 1] -> (N, 3) RGB in [0, 1] (the standard hexcone model)."""
    h, s, v = hsv[:, 0] * 6.0, hsv[:, 1], hsv[:, 2]
    sector = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        [
            np.stack([v, t, p], 1),
            np.stack([q, v, p], 1),
            np.stack([p, v, t], 1),
            np.stack([p, q, v], 1),
            np.stack([t, p, v], 1),
            np.stack([v, p, q], 1),
        ]
    )
    return table[sector, np.arange(len(hsv))]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _unit_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1): y (H, W) and x (H, W)."""
    y = (np.arange(height) + 0.5) / height
    x = (np.arange(width) + 0.5) / width
    return np.meshgrid(y, x, indexing="ij")


def value_noise(rng: np.random.Generator, *, height: int, width: int, cells: int, wrap: bool) -> np.ndarray:
    """(H, W) float64 in [0, 1]: a random (cells x cells) lattice, bilinearly interpolated.

    With ``wrap`` the lattice is periodic, so the image tiles seamlessly.
    """
    lattice_size = cells if wrap else cells + 1
    lattice = rng.random((lattice_size, lattice_size))
    y, x = _unit_grid(height, width)
    gy, gx = y * cells, x * cells
    y0, x0 = np.floor(gy).astype(int), np.floor(gx).astype(int)
    fy, fx = gy - y0, gx - x0
    fy, fx = (
        fy * fy * (3 - 2 * fy),
        fx * fx * (3 - 2 * fx),
    )  # smoothstep: no visible lattice lines
    y1, x1 = y0 + 1, x0 + 1
    if wrap:
        y0, y1, x0, x1 = y0 % cells, y1 % cells, x0 % cells, x1 % cells
    top = lattice[y0, x0] * (1 - fx) + lattice[y0, x1] * fx
    bottom = lattice[y1, x0] * (1 - fx) + lattice[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _fractal_noise(rng: np.random.Generator, *, height: int, width: int, wrap: bool) -> np.ndarray:
    """(H, W) in [0, 1]: three octaves of value noise, base frequency 2-6 cells."""
    base = int(rng.integers(2, 7))
    total = np.zeros((height, width))
    for octave in range(3):
        total += 0.5**octave * value_noise(rng, height=height, width=width, cells=base * 2**octave, wrap=wrap)
    return total / sum(0.5**octave for octave in range(3))


def _colour_ramp(weights: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Blend two colours (2, 3) by weights (H, W) in [0, 1] -> (H, W, 3)."""
    return colors[0] * (1 - weights[..., None]) + colors[1] * weights[..., None]


def make_texture(kind: str, rng: np.random.Generator, *, size: int = 128) -> np.ndarray:
    """One tileable texture of the given kind -> (size, size, 3) uint8."""
    if kind not in TEXTURE_KINDS:
        raise ValueError(f"unknown texture kind {kind!r}; valid kinds are {TEXTURE_KINDS}")
    y, x = _unit_grid(size, size)
    colors = random_colors(rng, 3)
    if kind == "solid":
        image = np.broadcast_to(colors[0], (size, size, 3))
    elif kind in ("stripes", "checker"):
        fu, fv = rng.integers(1, 7, size=2)
        if kind == "stripes":
            direction = int(rng.integers(0, 3))  # along u, along v, or diagonal
            fu, fv = (fu, 0) if direction == 0 else (0, fv) if direction == 1 else (fu, fv)
            n_colors = int(rng.integers(2, 4))
            band = np.floor(((fu * x + fv * y) % 1.0) * n_colors).astype(int)
            image = colors[band]
        else:
            image = colors[((np.floor(x * 2 * fu) + np.floor(y * 2 * fv)) % 2).astype(int)]
    elif kind == "noise":
        image = _colour_ramp(_fractal_noise(rng, height=size, width=size, wrap=True), colors[:2])
    else:  # label: a band all around the object with text-like marks on a plain or striped body
        image = make_texture("solid" if rng.random() < 0.5 else "stripes", rng, size=size) / 255.0
        low = rng.uniform(0.15, 0.5)
        high = min(low + rng.uniform(0.2, 0.45), 0.95)
        band = (y >= low) & (y < high)
        image = np.where(band[..., None], colors[1], image)
        rows = int(rng.integers(1, 4))
        row_edges = np.linspace(low, high, rows + 1)
        marks = np.zeros((size, size), dtype=bool)
        for r in range(rows):
            row_low = row_edges[r] + 0.25 * (row_edges[r + 1] - row_edges[r])
            row_high = row_edges[r + 1] - 0.25 * (row_edges[r + 1] - row_edges[r])
            glyph_on = rng.random(int(rng.integers(8, 24))) < 0.7
            glyph = np.floor(x * len(glyph_on)).astype(int)
            marks |= (y >= row_low) & (y < row_high) & glyph_on[glyph] & ((x * len(glyph_on)) % 1.0 < 0.75)
        image = np.where(marks[..., None], colors[2], image)
    return _to_uint8(np.asarray(image, dtype=np.float64))


def make_background(
    kind: str,
    rng: np.random.Generator,
    *,
    height: int,
    width: int,
    plain_color: tuple[int, int, int],
) -> np.ndarray:
    """One background image of the given kind -> (height, width, 3) uint8.

    "plain" is the clutter-free option: every pixel is ``plain_color`` (no randomness used).
    """
    if kind not in BACKGROUND_KINDS:
        raise ValueError(f"unknown background kind {kind!r}; valid kinds are {BACKGROUND_KINDS}")
    if kind == "plain":
        return np.broadcast_to(np.asarray(plain_color, dtype=np.uint8), (height, width, 3)).copy()
    colors = random_colors(rng, 2)
    if kind == "solid":
        return _to_uint8(np.broadcast_to(colors[0], (height, width, 3)))
    if kind == "gradient":
        angle = rng.uniform(0.0, 2 * np.pi)
        y, x = _unit_grid(height, width)
        ramp = (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle)
        ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-12)
        return _to_uint8(_colour_ramp(ramp, colors))
    noise = _fractal_noise(rng, height=height, width=width, wrap=False)
    return _to_uint8(_colour_ramp(noise, colors))
