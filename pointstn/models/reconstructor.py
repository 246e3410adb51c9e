"""The reconstructor: composes the stages of DESIGN.md section 1 and returns one small output type.

images (B,3,S,S) -> backbone -> localization (T = R, s, t) and coarse head (canonical cloud)
-> 3D sampler (image features at the coarse points, through T) -> decoder (sparse | dense | none)
-> fine canonical cloud -> T -> camera-frame cloud. Built by `pointstn.models.build.build_model`.

Query lattice (`lattice` g > 0). The decoder only sees image features where its input points are. The
coarse cloud concentrates where the global branch believes the object is, so the rest of the cube --
where hidden sides must be grown and false surfaces pruned -- has no image evidence. With a lattice,
the centres of a g x g x g grid over the normalized cube join the coarse points as query points: the
sampler lifts image features to every region (through T, so a region's features say whether it
projects onto the object), and the decoder's occupancy heads can carve with them.

Retrieval prior (`retrieval_prior`, optional): the nearest training view's object cloud, posed as that
view saw it, joins the decoder's query points too, one per finest voxel it occupies, with extra input
channels (`pointstn.models.retrieval_prior`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pointstn.models.decoder_types import DecoderOutput, LevelOutput
from pointstn.models.retrieval_prior import prior_queries
from pointstn.models.types import RotationHypotheses, SimilarityTransform
from pointstn.ops.voxel import voxel_centers


@dataclass(frozen=True)
class ReconstructionOutput:
    """What the model predicts for a batch (B samples).

    points: (B, P, 3) the output cloud in the normalized canonical frame (longest edge 1), padded;
        lengths: (B,) valid points per sample. Without a decoder this is the coarse cloud.
    points_camera: (B, P, 3) the same points in the camera frame, metres (transform.apply(points)).
    transform: canonical -> camera similarity (R, s, t).
    coarse, coarse_camera: (B, Nc, 3) the global branch's cloud in both frames.
    levels: the decoder's per-level occupancy logits (and targets when ground truth was given).
    rotation_hypotheses: with rotation anchors, every anchor's score and refined rotation (the
        transform uses the best-scoring one); else None.
    """

    points: Tensor
    lengths: Tensor
    points_camera: Tensor
    transform: SimilarityTransform
    coarse: Tensor
    coarse_camera: Tensor
    levels: tuple[LevelOutput, ...]
    rotation_hypotheses: RotationHypotheses | None = None


def lattice_points(size: int) -> Tensor:
    """(size**3, 3) float32 centres of a size^3 grid over the normalized cube [-0.5, 0.5]^3 ((0, 3) for 0)."""
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / max(size, 1) - 0.5
    return torch.cartesian_prod(centres, centres, centres).reshape(-1, 3)


def targets_in_predicted_frame(points_camera: Tensor, transform: SimilarityTransform) -> tuple[Tensor, Tensor]:
    """(B, N, 3) camera-frame ground truth -> (points (B, N, 3), lengths (B,)) in the normalized frame of the
    *predicted* transform (detached), the points inside [-0.5, 0.5]^3 first.

    The decoder sees image features lifted through the predicted T and its output is mapped back by the
    same T, so labelling its occupancy in T's frame asks it for exactly what the camera-frame output
    needs, whatever T's error; with the true T this equals the canonical ground truth. Points the
    frame cannot hold (outside the cube, when the predicted scale is too small) are left out; a sample
    with none inside keeps its point nearest the cube, clamped onto it.
    """
    with torch.no_grad():
        local = transform.detach().inverse_apply(points_camera.detach())
        excess = (local.abs() - 0.5).amax(dim=-1)  # (B, N) > 0 outside the cube
        order = torch.argsort(excess, dim=1, stable=True)
        local = torch.gather(local, 1, order[..., None].expand(-1, -1, 3)).clamp(-0.5, 0.5)
        lengths = (excess <= 0).sum(dim=1).clamp(min=1)
    return local, lengths


def occupancy_truth(target_frame: str, *, points_camera: Tensor, points: Tensor, size: Tensor) -> dict[str, Tensor]:
    """The ground-truth keyword of `Reconstructor.forward` that labels the decoder's occupancy in
    `model.decoder.target_frame`: "predicted" -> gt_points_camera (B, N, 3) metres; "canonical" ->
    gt_points, the canonical cloud `points` (B, N, 3) metres divided by its longest edge `size` (B,)."""
    if target_frame == "predicted":
        return {"gt_points_camera": points_camera}
    if target_frame == "canonical":
        return {"gt_points": points / size[:, None, None]}
    raise ValueError(f"unknown target_frame {target_frame!r}; valid: predicted, canonical")


class Reconstructor(nn.Module):
    """Single-image point-cloud reconstruction; stages are given ready-built (see build.py)."""

    def __init__(self, *, backbone: nn.Module, localization: nn.Module, coarse_head: nn.Module,
                 sampler: nn.Module | None, decoder: nn.Module | None, image_size: int, lattice: int = 0,
                 retrieval_prior: nn.Module | None = None):
        super().__init__()
        if (sampler is None) != (decoder is None):
            raise ValueError("sampler and decoder come together (decoder 'none' has neither)")
        if retrieval_prior is not None and decoder is None:
            raise ValueError("the retrieval prior is an input of the decoder; decoder 'none' has none")
        if not isinstance(lattice, int) or lattice < 0:
            raise ValueError(f"lattice must be an int >= 0 (0: no query lattice); got {lattice!r}")
        self.backbone, self.localization, self.coarse_head = backbone, localization, coarse_head
        self.sampler, self.decoder = sampler, decoder
        self.retrieval_prior = retrieval_prior
        self.image_size = image_size
        self.register_buffer("lattice", lattice_points(lattice), persistent=False)

    def check_images(self, images: Tensor) -> None:
        """Clear errors for inputs the model cannot use (the rig fixes the input size)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) RGB, got shape {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"images must be {self.image_size}x{self.image_size} (the training rig), got "
                f"{images.shape[-2]}x{images.shape[-1]}; resize or crop with the predict API"
            )
        if not images.is_floating_point() or not torch.isfinite(images).all():
            raise ValueError("images must be finite floating-point values in [0, 1]")

    def forward(self, images: Tensor, gt_points: Tensor | None = None, gt_lengths: Tensor | None = None, *,
                gt_points_camera: Tensor | None = None, exclude_objects: Tensor | None = None) -> ReconstructionOutput:
        """images: (B, 3, S, S) in [0, 1]. Ground truth, optional, used only to label the decoder's
        occupancy at every level (training): gt_points (B, N, 3) in the normalized canonical frame, or
        gt_points_camera (B, N, 3) in metres, which is brought into the frame the model predicted
        (`targets_in_predicted_frame`). exclude_objects (B,): with a retrieval prior, the training
        object of each image, whose views it must not retrieve (training); ignored without one."""
        self.check_images(images)
        features = self.backbone(images)
        transform, hypotheses = self.localization(features.pooled, with_hypotheses=True)
        coarse = self.coarse_head(features.pooled)
        batch = images.shape[0]
        if self.decoder is None:
            points, lengths, levels = coarse, torch.full((batch,), coarse.shape[1], device=coarse.device), ()
        else:
            queries = coarse
            if self.lattice.numel():
                queries = torch.cat((coarse, self.lattice.to(coarse.dtype).expand(batch, -1, -1)), dim=1)
            prior = None
            if self.retrieval_prior is not None:  # posed in the predicted frame, like the occupancy labels
                cloud = self.retrieval_prior(images, exclude_objects=exclude_objects).to(queries.dtype)
                prior_points, prior = prior_queries(transform.detach().inverse_apply(cloud),
                                                    resolution=self.decoder.resolution)
                queries = torch.cat((queries, prior_points), dim=1)
            point_features = self.sampler(queries, transform, features.maps)
            point_inputs = point_features.features
            if prior is not None:  # the prior's channels; zeros for the coarse and lattice points
                own = prior.new_zeros(batch, queries.shape[1] - prior.shape[1], prior.shape[2])
                point_inputs = torch.cat((point_inputs, torch.cat((own, prior), dim=1)), dim=-1)
            targets = None
            if gt_points_camera is not None:
                targets = self.decoder.occupancy_targets(*targets_in_predicted_frame(gt_points_camera, transform))
            elif gt_points is not None:
                targets = self.decoder.occupancy_targets(gt_points, gt_lengths)
            lift = None
            if self.decoder.lift is not None:
                def lift(coords: Tensor, resolution: int) -> Tensor:
                    centres = voxel_centers(coords, resolution=resolution, dtype=queries.dtype)
                    lifted = self.sampler.sample_packed(centres, coords[:, 0], transform, point_features.maps)
                    if prior is not None:  # the prior's channels, 0 (not a prior point)
                        lifted = torch.cat((lifted, lifted.new_zeros(lifted.shape[0], prior.shape[2])), dim=-1)
                    return lifted
            decoded: DecoderOutput = self.decoder(
                queries, point_inputs, targets=targets, lift=lift, context=features.pooled
            )
            points, lengths, levels = decoded.points, decoded.lengths, decoded.levels
        return ReconstructionOutput(
            points=points,
            lengths=lengths,
            points_camera=transform.apply(points),
            transform=transform,
            coarse=coarse,
            coarse_camera=transform.apply(coarse),
            levels=tuple(levels),
            rotation_hypotheses=hypotheses,
        )
