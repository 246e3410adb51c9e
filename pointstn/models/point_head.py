"""The decoders' point heads: K output points per kept finest voxel, each its centre plus an offset.

Both heads bound every offset by tanh to less than one voxel size per axis (`points_from_offsets`),
so a point stays near its voxel (`OffsetHead`, what the two heads share).

- `PointHead` ("linear"): a linear map of the voxel's decoder features. What every run before session
  17 used; the checkpoints' keys are `point_head.linear.*`.
- `MLPPointHead` ("mlp"): an MLP (two hidden ReLU layers) of the voxel's decoder features, its centre
  in the normalized cube and a global image feature (the backbone's pooled descriptor, through a
  linear map). Neither the voxel's position nor the whole object is in a finest-level feature, which
  sees a few voxels around it; a round object's surface is placed by both (session 16: on the
  truth's voxels, a head of this kind refitted on a frozen model reached f@1% 0.37 vs 0.25).
  Trained with the model at full scale it scored lower than the linear head (0.0883 vs 0.0953;
  docs/RESULTS.md, session 17), so the configs keep "linear".

`build_point_head(kind, ...)` builds one by name.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pointstn.ops.voxel import packed_to_padded, points_from_offsets, voxel_centers

GRID_LO, GRID_HI = -0.5, 0.5  # the normalized canonical frame

POINT_HEAD_KINDS: tuple[str, ...] = ("linear", "mlp")


class OffsetHead(nn.Module):
    """What both heads share: K points per voxel at centre + tanh(`raw_offsets`) voxel sizes."""

    def __init__(self, *, points_per_voxel: int):
        super().__init__()
        self.points_per_voxel = points_per_voxel
        self.centres_only = False  # diagnosis only (`pointstn.engine.diagnose`): every point at its voxel's centre

    def raw_offsets(self, coords: Tensor, features: Tensor, *, resolution: int, context: Tensor | None) -> Tensor:
        """(V, 3K) offsets before tanh; a head that reads `context` checks it here."""
        raise NotImplementedError

    def forward(
        self, coords: Tensor, features: Tensor, *, resolution: int, batch_size: int, order: Tensor | None = None,
        context: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """(V, 4) voxels + (V, C) features -> padded points (B, P, 3) and lengths (B,) int64.

        `context`: (B, D) one global feature per sample (read by the heads that need one: "mlp").
        The points of one sample come voxel by voxel in the order of `coords`, or of `coords[order]`
        when an `order` (a permutation of the V voxels) is given, K per voxel. Permuting here rather
        than the caller means autograd keeps `features` themselves, not a permuted copy.
        """
        k = self.points_per_voxel
        offsets = torch.tanh(self.raw_offsets(coords, features, resolution=resolution, context=context))
        if self.centres_only:
            offsets = torch.zeros_like(offsets)
        if order is not None:
            coords, offsets = coords[order], offsets[order]
        offsets = offsets.view(-1, k, 3)
        points = points_from_offsets(coords, offsets, resolution=resolution, lo=GRID_LO, hi=GRID_HI)
        return packed_to_padded(points.reshape(-1, 3), coords[:, 0].long().repeat_interleave(k), batch_size)


class PointHead(OffsetHead):
    """The linear head: offsets are a linear map of the voxel's features."""

    def __init__(self, *, in_channels: int, points_per_voxel: int):
        super().__init__(points_per_voxel=points_per_voxel)
        self.linear = nn.Linear(in_channels, 3 * points_per_voxel)

    def raw_offsets(self, coords: Tensor, features: Tensor, *, resolution: int, context: Tensor | None) -> Tensor:
        return self.linear(features)


class MLPPointHead(OffsetHead):
    """K points per voxel from an MLP of (voxel features, voxel centre, Linear(global image feature)).

    Args:
        in_channels: C of the finest level's features.
        points_per_voxel: K.
        context_channels: D of the per-sample global feature (`forward`'s `context`).
        hidden: width of the two hidden layers.
        context_width: the global feature is mapped to this many channels first.
    """

    def __init__(self, *, in_channels: int, points_per_voxel: int, context_channels: int, hidden: int = 96,
                 context_width: int = 32):
        super().__init__(points_per_voxel=points_per_voxel)
        self.context_channels = context_channels
        self.context = nn.Linear(context_channels, context_width)
        self.mlp = nn.Sequential(
            nn.Linear(in_channels + 3 + context_width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 3 * points_per_voxel),
        )  # fmt: skip

    def raw_offsets(self, coords: Tensor, features: Tensor, *, resolution: int, context: Tensor | None) -> Tensor:
        if context is None:
            raise ValueError("the mlp point head reads a global image feature per sample: pass `context`")
        if context.ndim != 2 or context.shape[1] != self.context_channels:
            raise ValueError(f"context must be (B, {self.context_channels}), got {tuple(context.shape)}")
        centres = voxel_centers(coords, resolution=resolution, lo=GRID_LO, hi=GRID_HI, dtype=features.dtype)
        glob = self.context(context.to(features.dtype))[coords[:, 0].long()]
        return self.mlp(torch.cat((features, centres, glob), dim=1))


def build_point_head(
    kind: str, *, in_channels: int, points_per_voxel: int, context_channels: int | None
) -> OffsetHead:
    """The point head of a kind ("linear" | "mlp"; "mlp" needs `context_channels`)."""
    if kind == "linear":
        return PointHead(in_channels=in_channels, points_per_voxel=points_per_voxel)
    if kind == "mlp":
        if not isinstance(context_channels, int) or context_channels < 1:
            raise ValueError(f"the mlp point head needs context_channels (a positive int), got {context_channels!r}")
        return MLPPointHead(in_channels=in_channels, points_per_voxel=points_per_voxel,
                            context_channels=context_channels)
    raise ValueError(f"unknown point head {kind!r}; valid: {', '.join(POINT_HEAD_KINDS)}")
