"""Contact sheet of a prepared dataset: a grid of views, one tile per object, labelled."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from pointstn.data.format import PREVIEW_NAME, read_manifest, read_object, resolve_inside
from pointstn.io.atomic import atomic_write_bytes


def write_preview(root: str | Path, *, max_tiles: int = 48, columns: int = 8, out: str | Path | None = None) -> Path:
    """Tile the first view of up to `max_tiles` objects (round-robin over families) into a PNG."""
    from PIL import Image, ImageDraw

    root = Path(root)
    manifest = read_manifest(root)
    by_family: dict[str, list[str]] = {}
    for object_id, entry in manifest["objects"].items():
        by_family.setdefault(entry["family"], []).append(object_id)
    chosen: list[str] = []
    while len(chosen) < max_tiles and any(by_family.values()):
        for family in sorted(by_family):
            if by_family[family] and len(chosen) < max_tiles:
                chosen.append(by_family[family].pop(0))
    tiles = []
    for index, object_id in enumerate(chosen):
        entry = manifest["objects"][object_id]
        arrays, _ = read_object(resolve_inside(root, entry["file"]), arrays=("images", "view_bins"))
        view = index % len(arrays["images"])  # vary the view so the sheet shows several bins
        tile = Image.fromarray(arrays["images"][view])
        draw = ImageDraw.Draw(tile)
        label = f"{entry['family']} {arrays['view_bins'][view]}"
        draw.rectangle((0, 0, tile.width, 11), fill=(0, 0, 0))
        draw.text((2, 0), label, fill=(255, 255, 255))
        tiles.append(np.asarray(tile))
    if not tiles:
        raise ValueError(f"dataset {root} has no objects to preview")
    size = tiles[0].shape[0]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * size, min(columns, len(tiles)) * size, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * size:(r + 1) * size, c * size:(c + 1) * size] = tile
    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, format="PNG")
    path = Path(out) if out else root / PREVIEW_NAME
    atomic_write_bytes(path, buffer.getvalue())
    return path
