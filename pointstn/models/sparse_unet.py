"""Sparse U-Net decoder with generative up-sampling and occupancy pruning (DESIGN.md section 1).

points + features (B, N, 3) / (B, N, C_in), normalized canonical frame
-> voxelize at R (scatter-mean per voxel) -> sparse tensor
-> encoder: SubM block at R; per coarser level a k2 s2 SparseConv3d (each voxel goes to its parent,
   so the active set is exactly the parents' set) + SubM block, down to R / 2**(L - 1)
-> coarsest level: k3 s1 p1 SparseConv3d (dilates the active set by one voxel, so hidden sides can
   appear) -> `coarse_blocks` residual SubM blocks (context across the coarse grid: with a lattice every
   cell is active, and each block widens what a cell's head sees by one cell each way) -> occupancy
   head -> prune -> SubM block
-> per finer level: k2 s2 SparseConvTranspose3d (all 8 children of every kept voxel) + the encoder's
   features at the same coordinates (joined by voxel keys) -> norm, ReLU -> occupancy head -> prune
   -> SubM block
-> point head on the finest kept voxels: K points per voxel (centre + bounded offset).

The head scores every candidate from the up-sampled parent feature (a different linear map for each
of the 8 children) plus the skip, after norm and ReLU; the SubM block then runs on the kept voxels
only (as in octree-generating networks). Running the block before the head, on all candidates, made
the whole decoder about 2.5x slower (forward + backward, batch 4, R = 32 and 64), although most
candidates are then pruned.

A block is conv (no bias) -> `ChannelNorm` -> ReLU (`pointstn.models.channel_norm`: a layer norm over
each voxel's channels, the identical operation on the dense grid of `DenseUNetDecoder`). Norm and
ReLU are one module, `ChannelNormReLU`; with `recompute=True`, `forward` runs in a `RecomputeScope`
(`pointstn.ops.recompute`) and autograd keeps each block's norm input but recomputes the ReLU
output in the backward pass instead of keeping it for the next convolution: one feature tensor
per block instead of two, for the same values and gradients, at the cost of a slower step.

Pruning at every level (`keep_voxels`): inference keeps voxels with occupancy probability above
`prune_threshold`; training keeps (predicted OR ground-truth occupied), as generative sparse
decoders do (Gwak et al., "Generative Sparse Detection Networks"; MinkowskiEngine's completion
example), so every level sees the true structure while its head learns. Always: each sample keeps its
`ceil(voxel_floor * r**2)` highest-scoring voxels (at least one, so every sample yields a cloud; a
floor keeps one level's under-confident head from starving every finer level, since a pruned voxel's
children are never proposed), and at most `ceil(voxel_budget * r**2)`
voxels per sample at a level of resolution r (the highest-scoring first; in training ground-truth
voxels rank first), which bounds memory: a closed surface spanning the unit cube occupies about
6 r^2 voxels. The occupancy heads start from a prior probability `OCCUPANCY_PRIOR` (bias init as in
RetinaNet), so an untrained decoder keeps few voxels instead of half of all candidates. The
inference pair (`voxel_floor`, `prune_threshold`) can be changed after construction
(`set_inference_pruning`); training ends by choosing it on the validation split (engine/calibrate.py).

Level features (`level_features=True`): after its up-sampling (at the coarsest level: after `grow`),
every level adds `Linear(lift(coords, r))` to its candidates' features, `lift` being the 3D sampler
evaluated at the candidate voxel centres through the predicted transform, so occupancy heads at fine
levels see the image where they decide, not only where the coarse cloud put points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from pointstn.models.channel_norm import ChannelNormReLU
from pointstn.models.decoder_types import DecoderOutput, LevelOutput
from pointstn.models.point_head import GRID_HI, GRID_LO, OffsetHead, build_point_head
from pointstn.ops.recompute import recomputing
from pointstn.ops.sparse import (
    FeatureWise,
    SparseConv3d,
    SparseConvTranspose3d,
    SubMConv3d,
    make_sparse_tensor,
    prune,
    replace_features,
    set_dense_path,
)
from pointstn.ops.voxel import (
    OccupancyPyramid,
    index_add_rows,
    is_occupied,
    linearize_coords,
    occupancy_pyramid,
    voxelize,
)

if TYPE_CHECKING:
    from spconv.pytorch import SparseConvTensor

OCCUPANCY_PRIOR = 0.1  # initial occupancy probability of every head
TARGET_TOLERANCE = 1e-3  # ground-truth points may exceed [-0.5, 0.5] by this (rounding) and are clamped


def decoder_resolutions(*, resolution: int, levels: int) -> tuple[int, ...]:
    """The resolutions of a decoder's levels, finest first: (R, R / 2, ..., R / 2**(levels - 1))."""
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"a decoder needs at least one level (one entry in channels), got {levels}")
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    if resolution % 2 ** (levels - 1):
        raise ValueError(
            f"resolution {resolution} must be divisible by 2**(levels - 1) = {2 ** (levels - 1)} for {levels} levels"
        )
    return tuple(resolution >> level for level in range(levels))


def check_decoder_arguments(
    *, in_channels: int, channels: Sequence[int], resolution: int, points_per_voxel: int, voxel_budget: float,
) -> tuple[int, ...]:  # fmt: skip
    """Validate the constructor arguments both decoders share; returns the resolutions (finest first).
    The inference pair (prune_threshold, voxel_floor) is checked by `InferencePruning.set_inference_pruning`,
    which both constructors call."""
    for name, value in (("in_channels", in_channels), ("points_per_voxel", points_per_voxel), *(
        (f"channels[{i}]", c) for i, c in enumerate(channels)
    )):  # fmt: skip
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not voxel_budget > 0:
        raise ValueError(f"voxel_budget must be > 0 (voxels per r**2 per sample), got {voxel_budget}")
    return decoder_resolutions(resolution=resolution, levels=len(channels))


def occupancy_targets(points: Tensor, lengths: Tensor | None = None, *, resolutions: Sequence[int]) -> OccupancyPyramid:
    """Ground-truth occupancy of (B, N, 3) normalized canonical clouds at `resolutions` (finest first).

    Points may exceed [-0.5, 0.5]^3 by `TARGET_TOLERANCE` (normalization rounding) and are clamped
    onto the cube; anything farther out is an unnormalized cloud and raises ValueError.
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"ground-truth points must be (B, N, 3), got {tuple(points.shape)}")
    valid = torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)
    if lengths is not None:
        valid = torch.arange(points.shape[1], device=points.device)[None, :] < lengths[:, None]
    excess = (points.detach().abs() - GRID_HI).amax(dim=-1)
    if bool((valid & (excess > TARGET_TOLERANCE)).any()):
        raise ValueError(
            f"ground-truth points reach {GRID_HI + float(excess[valid].max()):.4g} in absolute value; the "
            "decoder's targets need clouds normalized into [-0.5, 0.5]^3 (divide by the longest bbox edge)"
        )
    clamped = points.detach().clamp(GRID_LO, GRID_HI)
    return occupancy_pyramid(clamped, lengths, resolutions=tuple(resolutions), lo=GRID_LO, hi=GRID_HI)


def check_targets(targets: OccupancyPyramid | None, *, resolutions: tuple[int, ...], batch_size: int) -> None:
    """TypeError/ValueError unless `targets` is None or a pyramid at exactly the decoder's resolutions and batch."""
    if targets is None:
        return
    if not isinstance(targets, OccupancyPyramid):
        raise TypeError(f"targets must be an OccupancyPyramid or None, got {type(targets).__name__}")
    if tuple(targets.resolutions) != resolutions or targets.batch_size != batch_size:
        raise ValueError(
            f"targets are at resolutions {tuple(targets.resolutions)} for batch {targets.batch_size}, but the "
            f"decoder needs {resolutions} for batch {batch_size} (use decoder.occupancy_targets)"
        )


def prune_threshold_logit(probability: float) -> float:
    """logit(p), with logit(0) = -inf (keep everything) and logit(1) = +inf (keep only the top voxel)."""
    if probability <= 0.0:
        return -math.inf
    if probability >= 1.0:
        return math.inf
    return math.log(probability / (1.0 - probability))


def level_caps(*, resolutions: Sequence[int], voxel_budget: float) -> tuple[int, ...]:
    """Most voxels a sample keeps at each level: ceil(voxel_budget * r**2)."""
    return tuple(max(1, math.ceil(voxel_budget * r * r)) for r in resolutions)


def level_floors(*, resolutions: Sequence[int], voxel_floor: float) -> tuple[int, ...]:
    """Fewest voxels a sample keeps at each level (when it has them): max(1, ceil(voxel_floor * r**2))."""
    return tuple(max(1, math.ceil(voxel_floor * r * r)) for r in resolutions)


def keep_voxels(
    batch_index: Tensor, logits: Tensor, occupied: Tensor | None, *, threshold_logit: float, cap: int, batch_size: int,
    floor: int = 1,
) -> Tensor:
    """The voxels a level keeps (module docstring): wanted ones, capped per sample, plus each sample's top `floor`.

    Each sample's voxels are ranked by (ground-truth occupied first when `occupied` is given, then
    logit, highest first); the wanted voxels (logit > threshold, or occupied) form a prefix of that
    ranking. A sample keeps its first max(floor, min(cap, wanted)) voxels (all, when it has fewer).

    Args:
        batch_index: (N,) integer sample of each voxel.
        logits: (N,) occupancy logits (not differentiated).
        occupied: (N,) bool ground truth to keep as well (training), or None (inference).
        threshold_logit: voxels with logit > this are wanted.
        cap: at most this many voxels per sample (>= 1).
        batch_size: B.
        floor: at least this many per sample (>= 1; the top-ranked ones), even when not wanted.

    Returns:
        (N,) bool; every sample with at least one voxel keeps at least one. Vectorized (two stable
        sorts), no loop over the batch.
    """
    logits = logits.detach()
    batch = batch_index.long()
    wanted = logits > threshold_logit
    group = batch
    if occupied is not None:
        wanted = wanted | occupied
        group = 2 * batch + (~occupied).long()
    order = torch.argsort(logits, descending=True, stable=True)
    order = order[torch.argsort(group[order], stable=True)]  # by sample, occupied first, then logit
    counts = torch.bincount(batch, minlength=batch_size)
    rank = torch.empty_like(batch)
    rank[order] = torch.arange(batch.numel(), device=batch.device) - (torch.cumsum(counts, 0) - counts)[batch[order]]
    return (wanted & (rank < cap)) | (rank < max(1, floor))


def init_occupancy_head(head: nn.Module) -> None:
    """Bias = logit(OCCUPANCY_PRIOR): every voxel starts at that occupancy probability on average."""
    nn.init.constant_(head.bias, prune_threshold_logit(OCCUPANCY_PRIOR))


def _subm_block(in_channels: int, out_channels: int, key: str) -> nn.Sequential:
    return nn.Sequential(SubMConv3d(in_channels, out_channels, 3, bias=False, indice_key=key), _norm_relu(out_channels))


def _norm_relu(channels: int) -> nn.Module:
    return FeatureWise(ChannelNormReLU(channels))


def _down_block(in_channels: int, out_channels: int, key: str) -> nn.Sequential:
    """k2 s2 SparseConv3d -> norm + ReLU -> SubM block. Child 2 is an identity: it was the ReLU before
    norm and ReLU were fused, and keeping it keeps the positions and the checkpoints' keys (down.L.3.*)."""
    return nn.Sequential(
        SparseConv3d(in_channels, out_channels, 2, 2, bias=False), _norm_relu(out_channels), nn.Identity(),
        _subm_block(out_channels, out_channels, key),
    )  # fmt: skip


class InferencePruning:
    """What both decoders share about their keep rule at inference (module docstring), settable after
    construction (`pointstn.engine.calibrate` picks the pair on the validation split)."""

    resolutions: tuple[int, ...]
    voxel_budget: float

    def set_inference_pruning(self, *, voxel_floor: float, prune_threshold: float) -> None:
        if not 0.0 <= prune_threshold <= 1.0:
            raise ValueError(f"prune_threshold is a probability in [0, 1], got {prune_threshold}")
        if not 0 <= voxel_floor <= self.voxel_budget:
            raise ValueError(f"voxel_floor must be in [0, voxel_budget = {self.voxel_budget}], got {voxel_floor}")
        self.voxel_floor, self.prune_threshold = float(voxel_floor), float(prune_threshold)
        self.floors = level_floors(resolutions=self.resolutions, voxel_floor=voxel_floor)


class SparseUNetDecoder(nn.Module, InferencePruning):
    """Sparse generative U-Net decoder (module docstring); levels = len(channels), finest first.

    Args:
        in_channels: C_in of the point features.
        channels: channels per level, finest first (level l has resolution R / 2**l).
        resolution: R of the finest level, divisible by 2**(levels - 1).
        points_per_voxel: K output points per kept finest voxel.
        prune_threshold: occupancy probability a voxel must exceed to be kept at inference.
        voxel_budget: a sample keeps at most ceil(voxel_budget * r**2) voxels at a level of resolution r.
        voxel_floor: and at least ceil(voxel_floor * r**2) (its highest-scoring; at least 1).
        level_features: every level adds image features at its candidate voxels (`forward`'s `lift`,
            in_channels wide) through a linear map, before its occupancy head.
        dense_path: grid-preserving convolutions on nearly full grids (the coarsest level with a
            lattice) run as dense conv3d: same result, faster on CPU (`pointstn.ops.sparse.dense_path`).
        recompute: norm + ReLU outputs are recomputed in the backward pass instead of kept: less
            memory, a slower step, the same values and gradients (`pointstn.models.channel_norm`).
        coarse_blocks: residual SubM blocks (x + block(x)) on the coarsest level between `grow` and
            its occupancy head.
        point_head: "linear" or "mlp" (`pointstn.models.point_head`; "mlp" reads `forward`'s `context`).
        context_channels: D of that per-sample global feature (the mlp head needs it).
        point_voxels: which kept finest voxels emit points in training with `targets`: "kept" (all of
            them), or "true" (only the ground-truth-occupied ones, so the point head learns to place
            points where there is surface; a sample without any keeps all). Inference: always all.
    """

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
        dense_path: bool = True,
        recompute: bool = False,
        coarse_blocks: int = 0,
        point_head: str = "linear",
        context_channels: int | None = None,
        point_voxels: str = "kept",
    ):
        super().__init__()
        if not isinstance(coarse_blocks, int) or isinstance(coarse_blocks, bool) or coarse_blocks < 0:
            raise ValueError(f"coarse_blocks must be an int >= 0, got {coarse_blocks!r}")
        if point_voxels not in ("kept", "true"):
            raise ValueError(f"point_voxels must be 'kept' or 'true', got {point_voxels!r}")
        self.point_voxels = point_voxels
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
        self.stem = _subm_block(in_channels, c[0], "enc0")
        self.down = nn.ModuleList(_down_block(c[l - 1], c[l], f"enc{l}") for l in range(1, levels))
        self.grow = nn.Sequential(SparseConv3d(c[-1], c[-1], 3, 1, 1, bias=False), _norm_relu(c[-1]))
        self.context = nn.ModuleList(_subm_block(c[-1], c[-1], "ctx") for _ in range(coarse_blocks))
        self.up = nn.ModuleList(SparseConvTranspose3d(c[l + 1], c[l], 2, 2, bias=False) for l in range(levels - 1))
        # one-module Sequentials: the checkpoints' keys (up_norm.L.0.*) from when the ReLU was a second module
        self.up_norm = nn.ModuleList(nn.Sequential(_norm_relu(c[l])) for l in range(levels - 1))
        self.refine = nn.ModuleList(_subm_block(c[l], c[l], f"dec{l}") for l in range(levels))
        self.heads = nn.ModuleList(nn.Linear(c[l], 1) for l in range(levels))
        for head in self.heads:
            init_occupancy_head(head)
        self.lift = level_projections(in_channels, c) if level_features else None
        self.point_head: OffsetHead = build_point_head(
            point_head, in_channels=c[0], points_per_voxel=points_per_voxel, context_channels=context_channels
        )
        # diagnosis only (`pointstn.engine.diagnose`): levels that keep exactly the ground truth's voxels, in any mode
        self.true_voxel_levels: frozenset[int] = frozenset()
        set_dense_path(self, dense_path)
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

        Points outside [-0.5, 0.5]^3 are ignored; a sample without any point inside gets one voxel
        at the grid centre with zero features. Gradients reach `features` (not `points`: voxel
        membership is discrete) and every parameter. `targets` (from `occupancy_targets`) label
        each level's voxels and, in training mode, are kept in addition to the predicted ones.
        `lift(coords (V, 4), resolution) -> (V, C_in)`: the image features at voxels (required with
        `level_features`; the reconstructor passes its 3D sampler through the predicted transform).
        `context`: (B, D) a global image feature per sample, for the mlp point head (others ignore it).
        """
        batch = check_inputs(points, features, in_channels=self.in_channels)
        check_targets(targets, resolutions=self.resolutions, batch_size=batch)
        check_lift(self.lift, lift)
        x = self._voxel_input(points, features, lengths)
        x = self.stem(x)
        skips = []  # the encoder's outputs at levels 0 .. L - 2, each dropped once joined
        for down in self.down:
            skips.append(x)
            x = down(x)
        x = self.grow(x)
        for block in self.context:
            x = replace_features(x, x.features + block(x).features)
        threshold = prune_threshold_logit(self.prune_threshold)
        levels: list[LevelOutput | None] = [None] * len(self.channels)
        for level in reversed(range(len(self.channels))):
            resolution = self.resolutions[level]
            if level < len(self.channels) - 1:
                x = self.up[level](x)
                x = add_skip(x, skips.pop(), resolution=resolution)
                x = self.up_norm[level](x)
            if self.lift is not None:
                x = replace_features(x, x.features + self.lift[level](lift(x.indices, resolution)))
            logits = self.heads[level](x.features).squeeze(1)
            occupied = None if targets is None else is_occupied(x.indices, targets.levels[level], resolution=resolution)
            if level in self.true_voxel_levels:
                keep = self._true_voxels(x.indices[:, 0], logits, occupied, level=level, batch_size=batch)
            else:
                keep = keep_voxels(
                    x.indices[:, 0], logits, occupied if self.training else None,
                    threshold_logit=threshold, cap=self.caps[level], batch_size=batch, floor=self.floors[level],
                )  # fmt: skip
            labels = None if occupied is None else occupied.to(logits.dtype)
            levels[level] = LevelOutput(coords=x.indices, logits=logits, targets=labels, resolution=resolution,
                                        kept=keep)
            x = self.refine[level](prune(x, keep))
        coords, point_features = x.indices, x.features
        finest = levels[0]
        if self.point_voxels == "true" and self.training and finest.targets is not None:
            emit = true_or_all(coords[:, 0].long(), finest.targets[finest.kept].bool(), batch_size=batch)
            coords, point_features = coords[emit], point_features[emit]
        order = torch.argsort(linearize_coords(coords, resolution=self.resolution))
        out_points, out_lengths = self.point_head(
            coords, point_features, resolution=self.resolution, batch_size=batch, order=order, context=context
        )
        return DecoderOutput(points=out_points, lengths=out_lengths, levels=tuple(levels))

    def _true_voxels(self, batch_index: Tensor, logits: Tensor, occupied: Tensor | None, *, level: int,
                     batch_size: int) -> Tensor:
        """`true_voxel_levels`' keep rule: exactly the ground-truth-occupied candidates (a sample without any
        keeps its top-scoring voxel, as `keep_voxels` guarantees)."""
        if occupied is None:
            raise ValueError(f"level {level} is in true_voxel_levels: pass `targets`")
        return keep_voxels(batch_index, logits, occupied, threshold_logit=math.inf, cap=self.caps[level],
                           batch_size=batch_size, floor=1)

    def _voxel_input(self, points: Tensor, features: Tensor, lengths: Tensor | None) -> SparseConvTensor:
        r = self.resolution
        voxels = voxelize(points, features, lengths, resolution=r, lo=GRID_LO, hi=GRID_HI)
        coords, pooled = voxels.coords, voxels.features
        batch = points.shape[0]
        missing = (torch.bincount(coords[:, 0].long(), minlength=batch) == 0).nonzero().squeeze(1)
        if missing.numel():
            centre = torch.full((missing.numel(), 3), r // 2, dtype=torch.int32, device=coords.device)
            coords = torch.cat((coords, torch.cat((missing.int()[:, None], centre), dim=1)))
            pooled = torch.cat((pooled, pooled.new_zeros(missing.numel(), pooled.shape[1])))
        return make_sparse_tensor(coords=coords, features=pooled, spatial_shape=(r, r, r), batch_size=batch)


def true_or_all(batch_index: Tensor, occupied: Tensor, *, batch_size: int) -> Tensor:
    """(N,) bool: the occupied voxels, and every voxel of a sample that has no occupied one."""
    has_true = torch.zeros(batch_size, dtype=torch.bool, device=occupied.device)
    has_true[batch_index[occupied]] = True
    return occupied | ~has_true[batch_index]


LevelLift = Callable[[Tensor, int], Tensor]


def level_projections(in_channels: int, channels: Sequence[int]) -> nn.ModuleList:
    """One linear map per level from the lifted image features (in_channels) to the level's channels."""
    return nn.ModuleList(nn.Linear(in_channels, c) for c in channels)


def check_lift(projections: nn.ModuleList | None, lift: LevelLift | None) -> None:
    if projections is not None and lift is None:
        raise ValueError("this decoder reads image features at every level (level_features): pass `lift`")


def add_skip(tensor: SparseConvTensor, skip: SparseConvTensor, *, resolution: int) -> SparseConvTensor:
    """`tensor` with `skip`'s features added at the voxels both have (its other voxels unchanged).

    A join by voxel keys (sort + searchsorted), since pruning breaks any index correspondence; one
    `index_add_rows` of the matched rows, so no (N, C) temporaries beyond the result (and, unlike
    torch's `index_add`, it does not keep the gathered rows for the backward pass).
    """
    keys = linearize_coords(skip.indices, resolution=resolution)
    sorted_keys, order = torch.sort(keys)
    wanted = linearize_coords(tensor.indices, resolution=resolution)
    slot = torch.searchsorted(sorted_keys, wanted).clamp_(max=sorted_keys.numel() - 1)
    hit = (sorted_keys[slot] == wanted).nonzero().squeeze(1)
    return replace_features(tensor, index_add_rows(tensor.features, hit, skip.features[order[slot[hit]]]))


def check_inputs(points: Tensor, features: Tensor, *, in_channels: int) -> int:
    """ValueError unless points are (B, N, 3) and features (B, N, in_channels), both floating point; returns B."""
    if not isinstance(points, Tensor) or points.ndim != 3 or points.shape[-1] != 3 or not points.is_floating_point():
        got = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"points must be a floating-point (B, N, 3) tensor, got {got}")
    expected = (*points.shape[:2], in_channels)
    if not isinstance(features, Tensor) or tuple(features.shape) != expected or not features.is_floating_point():
        got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must be a floating-point {expected} tensor (B, N, in_channels), got {got}")
    if points.shape[0] < 1:
        raise ValueError("the decoder needs a batch of at least one sample")
    return points.shape[0]
