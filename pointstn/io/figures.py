"""Matplotlib figures of point clouds: input image beside clouds, each cloud from a few viewpoints."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pointstn.io.atomic import atomic_write_bytes

# (elevation, azimuth) in matplotlib's convention for the camera-frame plots below
VIEWS = ((10.0, -90.0), (30.0, -30.0), (60.0, 30.0))


def _camera_axes(points: np.ndarray) -> np.ndarray:
    """OpenCV camera frame (x right, y down, z forward) -> plot axes (x right, z depth, -y up)."""
    return np.stack([points[:, 0], points[:, 2], -points[:, 1]], axis=1)


def _scatter(axis, points: np.ndarray, view: tuple[float, float], centre: np.ndarray, radius: float) -> None:
    shown = _camera_axes(points - centre)
    axis.scatter(shown[:, 0], shown[:, 1], shown[:, 2], s=0.6, c=shown[:, 1], cmap="viridis", linewidths=0)
    axis.set_xlim(-radius, radius)
    axis.set_ylim(-radius, radius)
    axis.set_zlim(-radius, radius)
    axis.view_init(elev=view[0], azim=view[1])
    axis.set_axis_off()


def clouds_figure(rows: Sequence[tuple[np.ndarray | None, Mapping[str, np.ndarray], str]], path: str | Path, *,
                  views: Sequence[tuple[float, float]] = VIEWS[:1]) -> Path:
    """One row per sample: (image (H, W, 3) uint8 or None, {title: camera-frame cloud (N, 3)}, row label).

    Every cloud of a row is centred on the row's first cloud and drawn at the same scale, so sizes
    and offsets compare honestly; each cloud is drawn from every view in `views`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 1 + max(len(clouds) for _, clouds, _ in rows) * len(views)
    figure = plt.figure(figsize=(2.2 * columns, 2.3 * len(rows)))
    for r, (image, clouds, label) in enumerate(rows):
        first = next(iter(clouds.values()))
        centre = (first.min(0) + first.max(0)) / 2
        radius = 0.6 * max(float(np.ptp(c, axis=0).max()) for c in clouds.values()) + 1e-9
        axis = figure.add_subplot(len(rows), columns, r * columns + 1)
        if image is not None:
            axis.imshow(image)
        axis.set_title(label, fontsize=7)
        axis.set_axis_off()
        for c, (title, cloud) in enumerate(clouds.items()):
            for v, view in enumerate(views):
                axis = figure.add_subplot(len(rows), columns, r * columns + 2 + c * len(views) + v, projection="3d")
                _scatter(axis, np.asarray(cloud, dtype=np.float64), view, centre, radius)
                axis.set_title(title if v == 0 else "", fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
