"""The one place that reads the model config: ExperimentConfig -> Reconstructor with typed arguments."""

from __future__ import annotations

import math

from pointstn.config.schema import DecoderConfig, ExperimentConfig
from pointstn.models.backbone import ResNetBackbone
from pointstn.models.heads import CoarseHead
from pointstn.models.localization import LocalizationNet, nominal_pose_from_rig, rotation_anchors
from pointstn.models.reconstructor import Reconstructor
from pointstn.models.retrieval_prior import PRIOR_CHANNELS, RetrievalPrior
from pointstn.models.sampler3d import FeatureSampler3D


def _decoder_class(kind: str):
    """Decoders by name (imported on use: the sparse one needs spconv)."""
    if kind == "sparse":
        from pointstn.models.sparse_unet import SparseUNetDecoder

        return SparseUNetDecoder
    if kind == "dense":
        from pointstn.models.dense_unet import DenseUNetDecoder

        return DenseUNetDecoder
    raise ValueError(f"unknown decoder kind {kind!r}; valid: sparse, dense, none")


def _kind_options(decoder: DecoderConfig) -> dict:
    """Constructor options only the sparse decoder has (the dense path exists for sparse convolutions only)."""
    if decoder.kind == "sparse":
        return {"dense_path": decoder.dense_path, "coarse_blocks": decoder.coarse_blocks,
                "point_voxels": decoder.point_voxels}
    if decoder.coarse_blocks:
        raise ValueError(f"model.decoder.coarse_blocks is a sparse-decoder option; kind {decoder.kind!r} has none")
    if decoder.point_voxels != "kept":
        raise ValueError(f"model.decoder.point_voxels is a sparse-decoder option; kind {decoder.kind!r} has none")
    return {}


def normalized_focal(fov_y_deg: float) -> float:
    """Focal length in normalized image units ([-1, 1] across the image): 1 / tan(fov / 2)."""
    return 1.0 / math.tan(math.radians(fov_y_deg) / 2)


def build_model(config: ExperimentConfig) -> Reconstructor:
    """Build the reconstructor an experiment config describes (weights freshly initialised)."""
    from pointstn.data.render.rig import Rig

    model = config.model
    backbone = ResNetBackbone(
        width=model.backbone.width, blocks=model.backbone.blocks, frozen=model.backbone.frozen, norm=model.backbone.norm,
        global_grid=model.backbone.global_grid,
    )
    pooled = backbone.global_channels
    rig = Rig(image_size=config.data.image_size, fov_y_deg=model.rig.fov_y_deg,
              distance_range_m=(model.rig.distance_m, model.rig.distance_m))
    nominal = nominal_pose_from_rig(rig, elevation_deg=model.stn.nominal_elevation_deg, scale=model.stn.nominal_scale)
    localization = LocalizationNet(
        in_channels=pooled,
        hidden=model.stn.hidden,
        nominal_rotation=nominal.rotation,
        nominal_scale=nominal.scale,
        nominal_translation=nominal.translation,
        enabled=model.stn.enabled,
        max_log_scale=model.stn.max_log_scale,
        max_translation=model.stn.max_translation,
        anchors=rotation_anchors(rig, model.stn.rotation_anchor_step_deg, elevation_deg=model.stn.nominal_elevation_deg)
        if model.stn.rotation_anchor_step_deg else None,
    )
    coarse_head = CoarseHead(in_channels=pooled, num_points=model.num_coarse_points, hidden=model.coarse_hidden)
    sampler = decoder = prior = None
    if model.retrieval_prior.enabled:
        if model.decoder.kind == "none":
            raise ValueError("model.retrieval_prior is an input of the decoder; model.decoder.kind 'none' has none")
        prior = RetrievalPrior(points=model.retrieval_prior.points)
    if model.decoder.kind != "none":
        sampler = FeatureSampler3D(
            in_channels=backbone.out_channels, out_channels=model.sampler_channels,
            focal=normalized_focal(model.rig.fov_y_deg),
        )
        decoder = _decoder_class(model.decoder.kind)(
            in_channels=sampler.out_channels + (PRIOR_CHANNELS if prior is not None else 0),
            channels=model.decoder.channels,
            resolution=model.decoder.resolution,
            points_per_voxel=model.decoder.points_per_voxel,
            prune_threshold=model.decoder.prune_threshold,
            voxel_floor=model.decoder.voxel_floor,
            level_features=model.decoder.level_features,
            recompute=model.decoder.recompute,
            point_head=model.decoder.point_head,
            context_channels=pooled,
            **_kind_options(model.decoder),
        )
    return Reconstructor(
        backbone=backbone, localization=localization, coarse_head=coarse_head, sampler=sampler, decoder=decoder,
        image_size=config.data.image_size, lattice=model.decoder.lattice if decoder is not None else 0,
        retrieval_prior=prior,
    )
