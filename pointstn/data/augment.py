"""Augmentations that keep every geometry label consistent with the image.

- Photometric (brightness, contrast, saturation, per-channel gain, noise): geometry is untouched.
- In-plane roll: the image turns by `angle` about the principal point, which is exactly a camera
  rotation about its optical axis, so the pose becomes R' = Rz(angle) R, t' = Rz(angle) t and every
  camera-frame label (points, projections) stays consistent; the canonical-frame labels do not change.
Mirror flips are *not* offered: a flipped image corresponds to a reflected object, not a rotated one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def rotation_z(angle_rad: float) -> torch.Tensor:
    """(3, 3) rotation by `angle_rad` about +z of the camera (the optical axis)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def roll_image(image: torch.Tensor, mask: torch.Tensor, intrinsics: torch.Tensor, angle_rad: float):
    """Turn (C, S, S) image and (S, S) mask by `angle_rad` about K's principal point (fx == fy).

    A camera-frame point p maps to Rz(angle) p: output pixel offsets from the principal point are the
    input offsets rotated by the same angle, so each output pixel samples the input at Rz(-angle).
    Pixels that come from outside the image are 0 (image) and background (mask).
    """
    size_y, size_x = image.shape[-2:]
    cx, cy = float(intrinsics[0, 2]), float(intrinsics[1, 2])
    v, u = torch.meshgrid(torch.arange(size_y, dtype=torch.float32), torch.arange(size_x, dtype=torch.float32),
                          indexing="ij")
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    du, dv = u - cx, v - cy
    src_u, src_v = c * du + s * dv + cx, -s * du + c * dv + cy  # Rz(-angle) applied to the offsets
    grid = torch.stack([src_u / (size_x - 1) * 2 - 1, src_v / (size_y - 1) * 2 - 1], dim=-1)[None]
    image = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    mask = F.grid_sample(mask[None, None], grid, mode="nearest", padding_mode="zeros", align_corners=True)[0, 0]
    return image, mask


@dataclass(frozen=True)
class Augmentation:
    """Random, label-consistent augmentation of one sample (all draws from the given generator)."""

    photometric: bool = True
    brightness: float = 0.3  # factor in [1 - b, 1 + b]
    contrast: float = 0.3
    saturation: float = 0.3
    channel_gain: float = 0.1
    noise_std: float = 0.02  # max std of additive Gaussian noise, image in [0, 1]
    roll_probability: float = 0.0
    max_roll_deg: float = 30.0

    def __call__(self, image, mask, rotation, translation, intrinsics, rng: np.random.Generator):
        """(3, S, S) image, (S, S) mask, (3, 3) R, (3,) t, (3, 3) K -> augmented image, mask, R, t."""
        if self.roll_probability > 0 and rng.random() < self.roll_probability:
            angle = math.radians(rng.uniform(-self.max_roll_deg, self.max_roll_deg))
            image, mask = roll_image(image, mask, intrinsics, angle)
            turn = rotation_z(angle)
            rotation, translation = turn @ rotation, turn @ translation
        if self.photometric:
            image = self._photometric(image, rng)
        return image, mask, rotation, translation

    def _photometric(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        u = rng.uniform(-1.0, 1.0, size=6)
        image = image * (1 + self.brightness * u[0])
        mean = image.mean()
        image = (image - mean) * (1 + self.contrast * u[1]) + mean
        gray = image.mean(dim=0, keepdim=True)
        image = (image - gray) * (1 + self.saturation * u[2]) + gray
        image = image * torch.from_numpy(1 + self.channel_gain * u[3:6]).float()[:, None, None]
        std = self.noise_std * rng.random()
        noise = torch.from_numpy(rng.standard_normal(image.shape).astype(np.float32)) * std
        return (image + noise).clamp_(0.0, 1.0)
