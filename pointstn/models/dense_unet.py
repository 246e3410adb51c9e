"""Dense U-Net decoder: the sparse decoder's channel plan on full (B, C, R, R, R) grids (the ablation).

Same stages as `pointstn.models.sparse_unet.SparseUNetDecoder`, layer for layer, with dense
convolutions on every voxel instead of sparse ones on the active sites:

| sparse decoder | dense decoder |
| --- | --- |
| voxelize (scatter-mean) -> sparse tensor | voxelize (scatter-mean) -> (B, C_in, R, R, R), zeros elsewhere |
| SubMConv3d k3 | Conv3d k3 p1 |
| SparseConv3d k2 s2 (down) | Conv3d k2 s2 |
| SparseConv3d k3 s1 p1 (grow) | Conv3d k3 p1 |
| SparseConvTranspose3d k2 s2 (up) | ConvTranspose3d k2 s2 |
| skip joined by voxel keys, then norm + ReLU | skip added on the grid, then norm + ReLU |
| per-voxel Linear occupancy head | Conv3d k1 occupancy head |
| prune, then the level's SubM block on the kept voxels | the level's Conv3d block on every voxel |

No convolution has a bias (each is followed by `ChannelNorm`, the per-voxel layer norm of the sparse
decoder, with its ReLU; `recompute=True` recomputes their outputs in the backward pass as the
sparse decoder's option does). Each `LevelOutput` lists *all* B * r^3 voxels of its level in
lexicographic [b, i, j, k] order (`logits` is the level's (B, 1, r, r, r) logit grid flattened). The
output cloud comes from the finest level's voxels chosen by the sparse decoder's rule (`keep_voxels`:
above `prune_threshold`, in training also the ground-truth voxels; each sample's top
ceil(voxel_floor * R**2); at most ceil(voxel_budget * R**2) per sample) through the same point head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pointstn.models.channel_norm import ChannelNormReLU
from pointstn.models.decoder_types import DecoderOutput, LevelOutput
from pointstn.models.point_head import OffsetHead, build_point_head
from pointstn.models.sparse_unet import (
    GRID_HI,
    GRID_LO,
    InferencePruning,
    LevelLift,
    check_decoder_arguments,
    check_inputs,
    check_lift,
    check_targets,
    init_occupancy_head,
    keep_voxels,
    level_caps,
    level_projections,
    occupancy_targets,
    prune_threshold_logit,
)
from pointstn.ops.recompute import offer_derived, recomputing
from pointstn.ops.voxel import OccupancyPyramid, voxelize


def _block(conv: nn.Conv3d) -> nn.Sequential:
    """conv (no bias) -> ChannelNorm -> ReLU (fused: `ChannelNormReLU`)."""
    return nn.Sequential(conv, ChannelNormReLU(conv.out_channels))


def _conv3(in_channels: int, out_channels: int) -> nn.Sequential:
    return _block(nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False))


class DenseUNetDecoder(nn.Module, InferencePruning):
    """Dense U-Net decoder with the constructor and interface of `SparseUNetDecoder` (module docstring)."""

    def __init__(
        self,
        *,
        in_channels: int,
        channels: Sequence[int] = (32, 64, 128),
        resolution: int = 32,
        points_per_voxel: int = 4,
        prune_threshold: float = 0.5,
        voxel_budget: float = 8.0,
        voxel_floor: float = 0.0,
        level_features: bool = False,
        recompute: bool = False,
        point_head: str = "linear",
        context_channels: int | None = None,
    ):
        super().__init__()
        self.resolutions = check_decoder_arguments(
            in_channels=in_channels, channels=channels, resolution=resolution, points_per_voxel=points_per_voxel,
            voxel_budget=voxel_budget,
        )  # fmt: skip
        c = tuple(channels)
        self.in_channels, self.channels, self.resolution = in_channels, c, resolution
        self.points_per_voxel, self.voxel_budget = points_per_voxel, voxel_budget
        self.caps = level_caps(resolutions=self.resolutions, voxel_budget=voxel_budget)
        self.set_inference_pruning(voxel_floor=voxel_floor, prune_threshold=prune_threshold)
        levels = len(c)
        self.stem = _conv3(in_channels, c[0])
        self.down = nn.ModuleList(
            nn.Sequential(_block(nn.Conv3d(c[l - 1], c[l], 2, stride=2, bias=False)), _conv3(c[l], c[l]))
            for l in range(1, levels)
        )  # fmt: skip
        self.grow = _conv3(c[-1], c[-1])
        self.up = nn.ModuleList(nn.ConvTranspose3d(c[l + 1], c[l], 2, stride=2, bias=False) for l in range(levels - 1))
        # one-module Sequentials: the checkpoints' keys (up_norm.L.0.*) from when the ReLU was a second module
        self.up_norm = nn.ModuleList(nn.Sequential(ChannelNormReLU(c[l])) for l in range(levels - 1))
        self.refine = nn.ModuleList(_conv3(c[l], c[l]) for l in range(levels))
        self.heads = nn.ModuleList(nn.Conv3d(c[l], 1, 1) for l in range(levels))
        for head in self.heads:
            init_occupancy_head(head)
        self.lift = level_projections(in_channels, c) if level_features else None
        self.point_head: OffsetHead = build_point_head(
            point_head, in_channels=c[0], points_per_voxel=points_per_voxel, context_channels=context_channels
        )
        self.recompute = bool(recompute)  # forward runs in a RecomputeScope (`recomputing`)

    def occupancy_targets(self, points: Tensor, lengths: Tensor | None = None) -> OccupancyPyramid:
        """The ground truth `forward` takes: occupancy of (B, N, 3) normalized clouds at this decoder's resolutions."""
        return occupancy_targets(points, lengths, resolutions=self.resolutions)

    @recomputing
    def forward(
        self, points: Tensor, features: Tensor, lengths: Tensor | None = None, targets: OccupancyPyramid | None = None,
        lift: LevelLift | None = None, context: Tensor | None = None,
    ) -> DecoderOutput:
        """Decode (B, N, 3) points with (B, N, C_in) features into a cloud (see `DecoderOutput`).

        Points outside [-0.5, 0.5]^3 are ignored. Gradients reach `features` and every parameter.
        `lift`: as for `SparseUNetDecoder.forward`, here at every voxel of the grid; `context` as there.
        """
        batch = check_inputs(points, features, in_channels=self.in_channels)
        check_targets(targets, resolutions=self.resolutions, batch_size=batch)
        check_lift(self.lift, lift)
        x = self.stem(self._grid_input(points, features, lengths))
        skips = []  # the encoder's outputs at levels 0 .. L - 2, each dropped once joined
        for down in self.down:
            skips.append(x)
            x = down(x)
        x = self.grow(x)
        levels: list[LevelOutput | None] = [None] * len(self.channels)
        for level in reversed(range(len(self.channels))):
            if level < len(self.channels) - 1:
                x = self.up_norm[level](self.up[level](x) + skips.pop())
            resolution = self.resolutions[level]
            coords = grid_coords(batch_size=batch, resolution=resolution, device=x.device)
            if self.lift is not None:
                lifted = self.lift[level](lift(coords, resolution))  # (B * r^3, C), lexicographic = grid order
                x = x + lifted.view(batch, resolution, resolution, resolution, -1).permute(0, 4, 1, 2, 3)
            logits = self.heads[level](x).reshape(-1)
            labels = None if targets is None else targets.dense(level).reshape(-1).to(logits.dtype)
            levels[level] = LevelOutput(coords=coords, logits=logits, targets=labels, resolution=resolution)
            x = self.refine[level](x)
        finest = levels[0]
        occupied = finest.targets.bool() if (self.training and finest.targets is not None) else None
        keep = keep_voxels(
            finest.coords[:, 0], finest.logits, occupied,
            threshold_logit=prune_threshold_logit(self.prune_threshold), cap=self.caps[0], batch_size=batch,
            floor=self.floors[0],
        )  # fmt: skip
        kept = finest.coords[keep]  # lexicographic order
        b, i, j, k = kept.long().unbind(dim=1)
        kept_features = x.permute(0, 2, 3, 4, 1)[b, i, j, k]
        offer_derived(kept_features, x, lambda refined: refined.permute(0, 2, 3, 4, 1)[b, i, j, k])
        out_points, out_lengths = self.point_head(
            kept, kept_features, resolution=self.resolution, batch_size=batch, context=context
        )
        return DecoderOutput(points=out_points, lengths=out_lengths, levels=tuple(levels))

    def _grid_input(self, points: Tensor, features: Tensor, lengths: Tensor | None) -> Tensor:
        """(B, C_in, R, R, R): the scatter-mean feature of each occupied voxel, zeros elsewhere."""
        r = self.resolution
        voxels = voxelize(points, features, lengths, resolution=r, lo=GRID_LO, hi=GRID_HI)
        grid = features.new_zeros(points.shape[0], r, r, r, self.in_channels)
        b, i, j, k = voxels.coords.long().unbind(dim=1)
        grid = grid.index_put((b, i, j, k), voxels.features)
        return grid.permute(0, 4, 1, 2, 3).contiguous()


def grid_coords(*, batch_size: int, resolution: int, device: torch.device) -> Tensor:
    """(B * r^3, 4) int32 [b, i, j, k] of every voxel, in lexicographic (row-major) order."""
    axes = [torch.arange(n, dtype=torch.int32, device=device) for n in (batch_size, resolution, resolution, resolution)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 4)
