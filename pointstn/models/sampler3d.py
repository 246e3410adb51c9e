"""Differentiable 3D feature sampler: canonical points -> camera frame -> image -> per-point features.

Projection (weak perspective, intrinsics-free). A camera-frame point x_cam = s R p + t maps to

    uv = focal * x_cam[..., :2] / t_z,        focal = 1 / tan(fov / 2)   (3.732 for the 30 deg rig)

in `grid_sample`'s normalized coordinates with `align_corners=False` (u along the image columns =
camera x, v along the rows = camera y, principal point at the image centre = 0). Relation to the rig:
the pinhole projection with K = `Rig.intrinsics()` gives pixel u = f_px X / Z + (S - 1) / 2 with
pixel centres at integers and f_px = (S / 2) / tan(fov / 2); the normalized coordinate of pixel u is
(2u + 1) / S - 1 = focal X / Z. Weak perspective replaces every point's depth Z by the object centre's
depth t_z, an error of focal |X| |Z - t_z| / (Z t_z) in normalized units (tests/models/
test_sampler3d.py checks the identity and the resulting bound).

Per-point features, `out_channels` = sum(level_channels) + 5, concatenated in this order:

    [ level 0 (finest) | level 1 | ... | level L-1 | rel_depth | valid | x y z ]

- level i: the map of stage i reduced by a 1x1 conv (`in_channels[i]` -> `level_channels[i]`), then
  sampled bilinearly (`grid_sample`, align_corners=False, padding_mode="zeros"). The
  `out_channels - 5` image channels are split as evenly as possible over the levels, the remainder
  going to the coarsest levels (e.g. 64 - 5 = 59 over 4 levels -> 14, 15, 15, 15).
- rel_depth = (z_cam - t_z) / s: depth relative to the object centre in normalized object units
  (negative = nearer the camera, i.e. more likely on the visible side).
- valid = 1 if the point projects inside the image (|u| <= 1 and |v| <= 1), else 0. Points outside
  get exactly zero image features (the bilinear samples are multiplied by `valid`; without the mask,
  zero padding would still give partial features up to half a cell outside the image).
- x y z: the input points (normalized canonical frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointstn.models.types import SimilarityTransform

GEOMETRY_CHANNELS = 5  # rel_depth, valid, x, y, z


@dataclass(frozen=True)
class PointFeatures:
    """features (B, N, out_channels) (layout in the module docstring); uv (B, N, 2) normalized image
    coordinates; rel_depth (B, N) = (z_cam - t_z) / s; points_camera (B, N, 3) metres; maps: the
    reduced feature maps that were sampled (for `FeatureSampler3D.sample_packed` at more points)."""

    features: Tensor
    uv: Tensor
    rel_depth: Tensor
    points_camera: Tensor
    maps: tuple[Tensor, ...] = ()


def project_weak_perspective(points_cam: Tensor, translation: Tensor, focal: float) -> Tensor:
    """(B, N, 3) camera-frame points, (B, 3) object centres -> (B, N, 2) `focal * x_cam[..., :2] / t_z`.

    The output is in `grid_sample`'s normalized coordinates (align_corners=False, principal point 0).
    Raises ValueError unless every t_z > 0 (the object centre must be in front of the camera).
    """
    if points_cam.ndim != 3 or points_cam.shape[-1] != 3:
        raise ValueError(f"points_cam must be (B, N, 3); got {tuple(points_cam.shape)}")
    if translation.shape != (points_cam.shape[0], 3):
        raise ValueError(f"translation must be (B, 3) = ({points_cam.shape[0]}, 3); got {tuple(translation.shape)}")
    if not focal > 0:
        raise ValueError(f"focal must be > 0 (1 / tan(fov / 2)); got {focal}")
    depth = translation[:, 2]
    if not bool((depth > 0).all()):
        raise ValueError(f"object centre depths t_z must be > 0 (in front of the camera); got min {depth.min().item()}")
    return focal * points_cam[..., :2] / depth[:, None, None]


def split_channels(total: int, levels: int) -> tuple[int, ...]:
    """`total` channels over `levels` as evenly as possible, the remainder to the last (coarsest) levels."""
    base, extra = divmod(total, levels)
    return tuple(base + (1 if i >= levels - extra else 0) for i in range(levels))


def bilinear_packed(feature_map: Tensor, batch_index: Tensor, uv: Tensor) -> Tensor:
    """(B, C, H, W) map, (N,) sample of each point, (N, 2) normalized coordinates -> (N, C): exactly
    `grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)` per point, but for
    points packed over the batch (four gathers; corners outside the map contribute zero)."""
    batch, channels, height, width = feature_map.shape
    flat = feature_map.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    x = ((uv[:, 0] + 1) * width - 1) / 2  # pixel coordinates, centres at integers
    y = ((uv[:, 1] + 1) * height - 1) / 2
    x0, y0 = torch.floor(x), torch.floor(y)
    out = feature_map.new_zeros(uv.shape[0], channels)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        cx, cy = x0 + dx, y0 + dy
        weight = (1 - (x - cx).abs()) * (1 - (y - cy).abs())
        inside = (cx >= 0) & (cx <= width - 1) & (cy >= 0) & (cy <= height - 1)
        index = (batch_index * height + cy.clamp(0, height - 1).long()) * width + cx.clamp(0, width - 1).long()
        out = out + flat[index] * (weight * inside)[:, None]
    return out


class FeatureSampler3D(nn.Module):
    """(points (B,N,3) normalized canonical, SimilarityTransform, maps) -> PointFeatures.

    Attributes:
        out_channels: per-point feature width.
        level_channels: image channels taken from each map after its 1x1 reduction, finest first.
    """

    def __init__(self, *, in_channels: Sequence[int], out_channels: int, focal: float):
        super().__init__()
        in_channels = tuple(int(c) for c in in_channels)
        if not in_channels or any(c < 1 for c in in_channels):
            raise ValueError(f"in_channels must be a non-empty sequence of channel counts >= 1; got {in_channels}")
        image_channels = out_channels - GEOMETRY_CHANNELS
        if image_channels < len(in_channels):
            raise ValueError(
                f"out_channels must be >= {GEOMETRY_CHANNELS + len(in_channels)} ({GEOMETRY_CHANNELS} geometry channels "
                f"+ at least 1 per map for {len(in_channels)} maps); got {out_channels}"
            )
        if not focal > 0:
            raise ValueError(f"focal must be > 0 (1 / tan(fov / 2)); got {focal}")
        self.in_channels = in_channels
        self.out_channels = int(out_channels)
        self.focal = float(focal)
        self.level_channels = split_channels(image_channels, len(in_channels))
        self.reduce = nn.ModuleList(nn.Conv2d(c, k, kernel_size=1) for c, k in zip(in_channels, self.level_channels))

    def forward(self, points: Tensor, transform: SimilarityTransform, maps: Sequence[Tensor]) -> PointFeatures:
        """points (B, N, 3); transform with batch B; maps[i] (B, in_channels[i], H_i, W_i), finest first."""
        self._check_inputs(points, transform, maps)
        return self.sample(points, transform, self.reduce_maps(maps))

    def reduce_maps(self, maps: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """The backbone's maps after the 1x1 reductions (B, level_channels[i], H_i, W_i): what both
        `sample` and `sample_packed` read, computed once per forward pass."""
        return tuple(reduce(feature_map) for reduce, feature_map in zip(self.reduce, maps))

    def sample(self, points: Tensor, transform: SimilarityTransform, reduced: Sequence[Tensor]) -> PointFeatures:
        """`forward` on maps already reduced by `reduce_maps` (inputs not checked)."""
        points_camera = transform.apply(points)
        uv = project_weak_perspective(points_camera, transform.translation, self.focal)
        rel_depth = (points_camera[..., 2] - transform.translation[:, None, 2]) / transform.scale[:, None]
        valid = ((uv.abs() <= 1).all(dim=-1)).to(points.dtype)  # (B, N)
        grid = uv.unsqueeze(1)  # (B, 1, N, 2): x = u (columns), y = v (rows)
        sampled = [
            F.grid_sample(feature_map, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            for feature_map in reduced
        ]  # each (B, C_i, 1, N)
        image_features = torch.cat(sampled, dim=1).squeeze(2).transpose(1, 2) * valid[..., None]
        features = torch.cat((image_features, rel_depth[..., None], valid[..., None], points), dim=-1)
        return PointFeatures(features=features, uv=uv, rel_depth=rel_depth, points_camera=points_camera,
                             maps=tuple(reduced))

    def sample_packed(self, points: Tensor, batch_index: Tensor, transform: SimilarityTransform,
                      reduced: Sequence[Tensor]) -> Tensor:
        """(N, 3) points of samples `batch_index` (N,) -> (N, out_channels) features, the layout of
        `forward` (e.g. the candidate voxels of a sparse decoder level, packed over the batch)."""
        b = batch_index.long()
        scale, translation = transform.scale[b], transform.translation[b]
        points_camera = scale[:, None] * (points[:, None, :] @ transform.rotation[b].transpose(1, 2))[:, 0] + translation
        uv = self.focal * points_camera[:, :2] / translation[:, 2:3]
        rel_depth = (points_camera[:, 2] - translation[:, 2]) / scale
        valid = ((uv.abs() <= 1).all(dim=-1)).to(points.dtype)
        image_features = torch.cat([bilinear_packed(m, b, uv) for m in reduced], dim=1) * valid[:, None]
        return torch.cat((image_features, rel_depth[:, None], valid[:, None], points), dim=-1)

    def _check_inputs(self, points: Tensor, transform: SimilarityTransform, maps: Sequence[Tensor]) -> None:
        if points.ndim != 3 or points.shape[-1] != 3 or not points.is_floating_point():
            raise ValueError(f"points must be a float (B, N, 3) tensor; got {tuple(points.shape)} {points.dtype}")
        batch = points.shape[0]
        shapes = (tuple(transform.rotation.shape), tuple(transform.scale.shape), tuple(transform.translation.shape))
        if shapes != ((batch, 3, 3), (batch,), (batch, 3)):
            raise ValueError(
                f"transform must have rotation (B,3,3), scale (B,), translation (B,3) with B={batch}; got {shapes}"
            )
        if not bool((transform.scale > 0).all()):
            raise ValueError(f"transform scales must be > 0; got min {transform.scale.min().item()}")
        if len(maps) != len(self.in_channels):
            raise ValueError(
                f"expected {len(self.in_channels)} feature maps (in_channels={self.in_channels}); got {len(maps)}"
            )
        for i, (feature_map, channels) in enumerate(zip(maps, self.in_channels)):
            if feature_map.ndim != 4 or feature_map.shape[:2] != (batch, channels):
                raise ValueError(f"maps[{i}] must be (B={batch}, {channels}, H, W); got {tuple(feature_map.shape)}")
