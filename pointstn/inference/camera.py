"""The equivalent camera: how an arbitrary image becomes the model's S x S rig view, and back.

The model was trained on the rig (pointstn.data.render.rig): a pinhole camera with vertical field of
view `fov` looking straight at the object origin from `distance` metres, images S x S. It therefore
reads metric size from apparent size and expects the object centred on the optical axis.

An input image comes with intrinsics K (pixels, OpenCV: pixel centres at integers). By default K is
the rig's camera scaled to the image: f = (H / 2) / tan(fov / 2), principal point at the centre, so a
rig image of any resolution maps to itself. The model input is rendered by a *virtual camera* with
the same optical centre as the real one:

- its optical axis goes through the centre of the object's box (or the principal point when no box
  or mask is given) - the image of a rotated pinhole camera is an exact homography of the original
  image, so re-centring is exact for every pixel, not a principal-point shift approximation;
- its focal length is the rig's (`zoom="rig"`, the default: apparent sizes stay those of the rig and
  the input stays in the training distribution) or chosen so the box fills `fill` of the input
  (`zoom="fit"`, zoom factor k = f_virtual / f_rig).

Mapping the prediction back. The model returns x' = s' R' p + t' in the virtual camera frame under
the rig assumption (focal f_rig, object centre at the rig distance). With zoom k the same image is
explained, in weak perspective (the model's own projection model), by the object k times smaller at
the same depth: s_v = s' / k, t_v = (t'_x / k, t'_y / k, t'_z), R_v = R'. The real camera frame is
then x = R_view x_v with R_view the virtual-to-real rotation, so

    R = R_view R',   s = s' / k,   t = R_view t_v.

For k = 1 this is a pure rotation (exact). Metric outputs still assume the object centre is at the
rig distance from the real camera: elsewhere every length scales by true distance / rig distance
(or pass a scale hint; see docs/ROBOTICS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pointstn.errors import PointstnError

ZOOM_MODES = ("rig", "fit")
DEFAULT_FILL = 0.5  # box side / input side under zoom="fit"; about the rig's larger objects
# Pre-reduce the source by an integer factor when one virtual pixel covers more source pixels than
# this (bilinear sampling alone would alias).
_ALIAS_FOOTPRINT = 1.5


def default_intrinsics(*, height: int, width: int, fov_y_deg: float) -> np.ndarray:
    """(3, 3) float64 K of the rig camera scaled to an H x W image (vertical field of view `fov_y_deg`)."""
    focal = (height / 2.0) / math.tan(math.radians(fov_y_deg) / 2.0)
    return np.array([[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def check_intrinsics(K: object) -> np.ndarray:
    """(3, 3) float64 copy of a pinhole K with fx, fy > 0, no skew and last row (0, 0, 1)."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise PointstnError(f"intrinsics must be a finite (3, 3) matrix; got shape {K.shape}")
    if not (K[0, 0] > 0 and K[1, 1] > 0) or K[0, 1] != 0 or K[1, 0] != 0 or not np.array_equal(K[2], [0, 0, 1]):
        raise PointstnError("intrinsics must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
    return K.copy()


def look_rotation(direction: np.ndarray) -> np.ndarray:
    """(3, 3) real-from-virtual rotation whose third column is `direction` (normalized) and whose first
    column stays in the real camera's x-z plane direction (no roll: image "up" stays up). Identity
    for direction (0, 0, 1)."""
    z = np.asarray(direction, dtype=np.float64)
    z = z / np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)  # OpenCV: x = y cross z
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


@dataclass(frozen=True, eq=False)
class ModelView:
    """The virtual camera that rendered the model's input from the source image.

    rotation: (3, 3) real camera <- virtual camera (columns: virtual axes in the real frame).
    focal_px: virtual focal length in pixels of the S x S model input.
    rig_focal_px: the rig's focal length at S (what the model assumes).
    size: S.
    source_intrinsics: (3, 3) K of the source image.
    source_size: (height, width) of the source image.
    box: (x0, y0, x1, y1) the object's box in source pixels (edges; x1, y1 exclusive), or None.
    """

    rotation: np.ndarray
    focal_px: float
    rig_focal_px: float
    size: int
    source_intrinsics: np.ndarray
    source_size: tuple[int, int]
    box: tuple[float, float, float, float] | None

    @property
    def zoom(self) -> float:
        """k = focal_px / rig_focal_px (1 under zoom="rig")."""
        return self.focal_px / self.rig_focal_px

    def source_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """((S, S, 2) float64 source pixel (u, v) of every model-input pixel, (S, S) bool: ray in front)."""
        c = (self.size - 1) / 2.0
        grid = (np.arange(self.size, dtype=np.float64) - c) / self.focal_px
        u, v = np.meshgrid(grid, grid, indexing="xy")
        rays = np.stack([u, v, np.ones_like(u)], axis=-1)
        rays = rays @ self.rotation.T
        pix = rays @ self.source_intrinsics.T
        front = pix[..., 2] > 1e-9
        z = np.where(front, pix[..., 2], 1.0)
        return pix[..., :2] / z[..., None], front

    def to_camera(self, rotation: np.ndarray, scale: float, translation: np.ndarray
                  ) -> tuple[np.ndarray, float, np.ndarray]:
        """Model output (R', s', t') in the virtual frame -> (R, s, t) in the real camera frame
        (module docstring). rotation (3, 3), translation (3,), float64."""
        k = self.zoom
        t_virtual = np.array([translation[0] / k, translation[1] / k, translation[2]], dtype=np.float64)
        return self.rotation @ np.asarray(rotation, np.float64), float(scale) / k, self.rotation @ t_virtual

    def to_json(self) -> dict:
        return {
            "zoom": self.zoom,
            "focal_px": self.focal_px,
            "rig_focal_px": self.rig_focal_px,
            "input_size_px": self.size,
            "rotation_camera_from_view": self.rotation.tolist(),
            "source_intrinsics": self.source_intrinsics.tolist(),
            "source_size_hw": list(self.source_size),
            "box_xyxy": None if self.box is None else list(self.box),
        }


def plan_view(*, source_size: tuple[int, int], intrinsics: np.ndarray, box: tuple[float, float, float, float] | None,
              size: int, fov_y_deg: float, zoom: Literal["rig", "fit"] = "rig", fill: float = DEFAULT_FILL
              ) -> ModelView:
    """The virtual camera for one source image (module docstring).

    Args:
        source_size: (height, width) of the source image.
        intrinsics: (3, 3) K of the source image, pixels.
        box: the object's box (x0, y0, x1, y1) in pixel edge coordinates, or None (no re-centring).
        size: S, the model's input side.
        fov_y_deg: the rig's vertical field of view.
        zoom: "rig" (virtual focal = the rig's) or "fit" (the box fills `fill` of the input; needs a box).
        fill: fraction of the input side the box's longer side covers under zoom="fit", in (0, 1].
    """
    if zoom not in ZOOM_MODES:
        raise PointstnError(f"unknown zoom {zoom!r}; valid: {', '.join(ZOOM_MODES)}")
    if not 0.0 < fill <= 1.0:
        raise PointstnError(f"fill must be in (0, 1]; got {fill}")
    K = check_intrinsics(intrinsics)
    rig_focal = (size / 2.0) / math.tan(math.radians(fov_y_deg) / 2.0)
    inverse = np.linalg.inv(K)
    if box is None:
        rotation = np.eye(3)
    else:
        x0, y0, x1, y1 = box
        centre = np.array([(x0 + x1) / 2.0 - 0.5, (y0 + y1) / 2.0 - 0.5, 1.0])
        rotation = look_rotation(inverse @ centre)
    focal = rig_focal
    if zoom == "fit" and box is not None:
        x0, y0, x1, y1 = box
        corners = np.array([[x, y, 1.0] for x in (x0 - 0.5, x1 - 0.5) for y in (y0 - 0.5, y1 - 0.5)])
        rays = corners @ inverse.T @ rotation  # in the virtual frame
        if not (rays[:, 2] > 0).all():
            raise PointstnError(f"box {box} spans more than a half-space of view directions")
        half = float(np.abs(rays[:, :2] / rays[:, 2:3]).max())
        focal = fill * (size / 2.0) / half
    return ModelView(rotation=rotation, focal_px=float(focal), rig_focal_px=float(rig_focal), size=int(size),
                     source_intrinsics=K, source_size=(int(source_size[0]), int(source_size[1])), box=box)


def render_view(rgb: np.ndarray, view: ModelView) -> np.ndarray:
    """The model input: (S, S, 3) float32 in [0, 1], bilinear samples of `rgb` (H, W, 3) uint8 along the
    virtual camera's rays; rays leaving the image see white (the rig's plain background).

    When one input pixel spans more than 1.5 source pixels, the needed source region is first reduced by
    an integer factor with a box filter (Pillow `Image.reduce`), so large photos do not alias.
    """
    import torch
    from PIL import Image

    height, width = rgb.shape[:2]
    uv, front = view.source_pixels()
    K = view.source_intrinsics
    footprint = max(K[0, 0], K[1, 1]) / view.focal_px
    factor = max(1, math.floor(footprint)) if footprint >= _ALIAS_FOOTPRINT else 1
    inside = front & (uv[..., 0] > -1) & (uv[..., 0] < width) & (uv[..., 1] > -1) & (uv[..., 1] < height)
    if inside.any():
        lo = np.floor(uv[inside].min(axis=0)).astype(int) - 2
        hi = np.ceil(uv[inside].max(axis=0)).astype(int) + 3
        x0, y0 = max(0, lo[0]), max(0, lo[1])
        x1, y1 = min(width, hi[0]), min(height, hi[1])
    else:
        x0, y0, x1, y1 = 0, 0, min(width, 2), min(height, 2)
    region = rgb[y0:y1, x0:x1]
    u, v = uv[..., 0] - x0, uv[..., 1] - y0
    if factor > 1:
        region = np.asarray(Image.fromarray(region).reduce(factor))
        # reduced pixel i averages source pixels [i q, (i + 1) q): its centre is at i q + (q - 1) / 2
        u, v = (u - (factor - 1) / 2.0) / factor, (v - (factor - 1) / 2.0) / factor
    h, w = region.shape[:2]
    grid = np.stack([(2 * u + 1) / w - 1, (2 * v + 1) / h - 1], axis=-1)
    grid[~front] = -4.0  # far outside: the padding value
    source = torch.from_numpy(np.array(region, dtype=np.uint8)).permute(2, 0, 1)[None].float().div_(255.0)
    sampled = torch.nn.functional.grid_sample(
        source - 1.0, torch.from_numpy(grid)[None].float(), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return (sampled[0] + 1.0).clamp_(0.0, 1.0).permute(1, 2, 0).numpy()
