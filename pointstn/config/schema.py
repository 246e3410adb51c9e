"""The experiment config: frozen dataclasses, one per section, with documented bounds.

Every key a YAML file under `configs/` may set is a field here; anything else is an error. Model
code never sees these objects: `pointstn.models.build` maps them to keyword arguments.
Bounds are sanity limits that catch typos and absurd values (a resolution of 10^6, a negative batch),
not tuning advice; docs/CONFIG.md describes each key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pointstn.config.convert import ConfigError, param

EVAL_FRAMES = ("shape", "metric", "canonical")


@dataclass(frozen=True)
class DataConfig:
    """Where the prepared dataset lives and how samples are fed to the model."""

    root: str = param("data/graspable_demo", help="prepared dataset folder (relative to the current directory)")
    image_size: int = param(128, min=32, max=1024, help="square input size in pixels")
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    num_gt_points: int = param(16384, min=64, max=1_000_000, help="ground-truth surface samples per object")
    augment: bool = param(True, help="photometric augmentation that keeps geometry labels valid")
    num_workers: int = param(2, min=0, max=64, help="data loader worker processes")


@dataclass(frozen=True)
class BackboneConfig:
    """ResNet-style 2D CNN written in the package (no torchvision)."""

    width: int = param(32, min=4, max=512, help="channels of the first stage; doubles per stage")
    blocks: tuple[int, ...] = param((1, 1, 1, 1), min=1, max=16, help="residual blocks per stage")
    norm: Literal["group", "batch"] = "group"
    frozen: bool = False
    global_grid: int = param(
        1, min=1, max=16,
        help="global descriptor for pose and coarse cloud: last map pooled to g x g cells, flattened (1 = mean)",
    )  # fmt: skip


@dataclass(frozen=True)
class STNConfig:
    """Localization network predicting the similarity transform canonical -> camera."""

    enabled: bool = param(True, help="false = the ablation with T fixed to the nominal pose")
    hidden: int = param(256, min=8, max=4096)
    nominal_elevation_deg: float = param(20.0, min=-90.0, max=90.0, help="elevation of the nominal pose")
    nominal_scale: float = param(0.15, min=1e-3, max=10.0, help="longest edge (m) of the nominal pose")
    max_log_scale: float = param(3.0, min=0.1, max=10.0, help="bound of the predicted log-scale correction")
    max_translation: float = param(0.5, min=0.01, max=10.0, help="bound (m) of the translation correction")
    rotation_anchor_step_deg: float = param(
        0.0, min=0.0, max=90.0,
        help="0 = one regressed 6D rotation; else score anchor views this many degrees apart in azimuth and "
             "elevation, each with a 6D residual (models/localization.py)")


@dataclass(frozen=True)
class RigConfig:
    """The camera the model assumes (must match the training data's rig; checked at training time)."""

    fov_y_deg: float = param(30.0, min=1.0, max=170.0)
    distance_m: float = param(1.0, min=0.05, max=100.0, help="camera to object-origin distance")


@dataclass(frozen=True)
class DecoderConfig:
    kind: Literal["sparse", "dense", "none"] = "sparse"
    resolution: int = param(32, min=8, max=256, help="voxel grid resolution R of the finest level")
    channels: tuple[int, ...] = param((32, 64, 128), min=1, max=1024, help="channels per U-Net level")
    points_per_voxel: int = param(4, min=1, max=64, help="K offset points emitted per kept voxel")
    prune_threshold: float = param(0.5, min=0.0, max=1.0, help="occupancy probability below which voxels are dropped")
    lattice: int = param(0, min=0, max=64, help="g: a g^3 lattice of query points joins the coarse cloud (0 = none)")
    target_frame: Literal["canonical", "predicted"] = param(
        "canonical", help="frame of the occupancy labels: the true canonical one, or the one the STN predicted"
    )
    voxel_floor: float = param(0.5, min=0.0, max=8.0, help="every level keeps at least ceil(f * r^2) voxels per sample")
    coarse_blocks: int = param(
        0, min=0, max=16, help="sparse decoder: residual SubM blocks at the coarsest level, before its occupancy head"
    )
    level_features: bool = param(
        False, help="every decoder level samples image features at its candidate voxels (through T) for its occupancy"
    )
    dense_path: bool = param(
        True, help="sparse convs on nearly full grids run as dense conv3d (same result, faster on CPU); sparse decoder"
    )
    recompute: bool = param(
        False, help="recompute norm + ReLU outputs in the backward pass instead of keeping them: less memory, slower"
    )
    point_head: Literal["linear", "mlp"] = param(
        "linear", help="points per finest voxel from a linear map of its features, or an MLP that also sees "
        "the voxel's centre and the image's global feature"
    )
    point_voxels: Literal["kept", "true"] = param(
        "kept", help="sparse decoder, training: points come from every kept finest voxel, or only the true ones"
    )

    def __post_init__(self) -> None:
        levels = len(self.channels)
        if levels < 1:
            raise ConfigError("config key 'model.decoder.channels': needs at least one level")
        if self.resolution % (2 ** (levels - 1)):
            raise ConfigError(
                f"config key 'model.decoder.resolution': {self.resolution} must be divisible by "
                f"2^(levels-1) = {2 ** (levels - 1)} for {levels} U-Net levels"
            )


@dataclass(frozen=True)
class RetrievalPriorConfig:
    """A retrieved training shape as an extra input of the decoder (models/retrieval_prior.py)."""

    enabled: bool = param(
        False, help="the decoder also sees the nearest training view's object cloud, posed as that view saw it"
    )
    points: int = param(
        8192, min=16, max=65536, help="points of each stored training cloud (enough to reach every voxel it occupies)"
    )


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    stn: STNConfig = field(default_factory=STNConfig)
    rig: RigConfig = field(default_factory=RigConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    retrieval_prior: RetrievalPriorConfig = field(default_factory=RetrievalPriorConfig)
    sampler_channels: int = param(64, min=8, max=2048, help="image-feature channels per sampled point")
    coarse_hidden: int = param(512, min=16, max=8192, help="hidden width of the coarse (global) branch")
    num_coarse_points: int = param(1024, min=16, max=65536, help="points of the coarse (global branch) cloud")
    num_output_points: int = param(
        4096, min=16, max=262144, help="fine-cloud points per sample in the training Chamfer terms (random subset)"
    )


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms; each term is logged separately."""

    chamfer_coarse: float = param(1.0, min=0.0, max=1e6)
    chamfer_fine: float = param(1.0, min=0.0, max=1e6)
    canonical_frame: float = param(1.0, min=0.0, max=1e6, help="weight of the canonical-frame Chamfer terms")
    camera_frame: float = param(1.0, min=0.0, max=1e6, help="weight of the camera-frame Chamfer terms")
    fine_canonical_frame: float = param(
        1.0, min=0.0, max=1e6,
        help="extra factor on the fine cloud's canonical-frame Chamfer term (0: the fine cloud is fitted in the "
        "camera frame only; the coarse cloud keeps canonical_frame)",
    )  # fmt: skip
    occupancy: float = param(1.0, min=0.0, max=1e6, help="BCE of the decoder's per-level occupancy")
    rotation: float = param(0.0, min=0.0, max=1e6, help="geodesic rotation loss when poses are given")
    pose: float = param(
        0.0, min=0.0, max=1e6,
        help="pose loss: rotation (symmetry-aware) + log-scale + translation terms (needs poses)",
    )  # fmt: skip
    up_axis: float = param(
        0.0, min=0.0, max=1e6,
        help="up-axis loss: sin^2 of the angle between the predicted and true lines of canonical +z (needs poses)",
    )  # fmt: skip
    # the fine cloud's Chamfer terms: "squared" (PyTorch3D's default), "unsquared" Euclidean distances, or
    # "robust" (Welsch, width robust_scale): pointstn.models.losses.chamfer_terms
    fine_distance: Literal["squared", "unsquared", "robust"] = "squared"
    robust_scale: float = param(
        0.01, min=1e-4, max=1.0, help="width of the robust fine distance, in object sizes (longest edges)"
    )


@dataclass(frozen=True)
class TrainConfig:
    seed: int = param(0, min=0, max=2**31 - 1)
    batch_size: int = param(16, min=1, max=4096)
    max_steps: int = param(2000, min=1, max=10_000_000)
    lr: float = param(1e-3, min=1e-8, max=10.0)
    weight_decay: float = param(1e-4, min=0.0, max=1.0)
    warmup_steps: int = param(100, min=0, max=1_000_000)
    grad_clip: float = param(10.0, min=0.0, max=1e6, help="max gradient norm; 0 disables clipping")
    log_every: int = param(20, min=1, max=1_000_000)
    val_every: int = param(500, min=1, max=10_000_000)
    checkpoint_every: int = param(500, min=1, max=10_000_000)
    best_metric: Literal["cd_l2", "cd_l1", "f@1%", "f@2%", "vol_rel_err"] = "f@1%"
    time_limit_minutes: float = param(0.0, min=0.0, max=1e6, help="save and stop after this long; 0 = no limit")
    threads: int = param(0, min=0, max=1024, help="torch intra-op threads; 0 keeps torch's default")
    calibrate_pruning: bool = param(
        True, help="at the end, pick best.pt's voxel_floor and prune_threshold on the val split (engine/calibrate.py)"
    )


@dataclass(frozen=True)
class EvalConfig:
    num_pred_points: int = param(4096, min=16, max=262144)
    num_gt_points: int = param(16384, min=16, max=1_000_000)
    resample: Literal["fps", "random"] = "fps"
    frames: tuple[str, ...] = ("shape", "metric", "canonical")
    fscore_thresholds: tuple[float, ...] = param((0.01, 0.02), min=1e-6, max=1.0, help="fractions of the gt's longest edge")
    oracle_view_poses: bool = param(
        True, help="oracle_nn also tries every training view's own pose: bounds retrieval per sample, ~3x slower"
    )

    def __post_init__(self) -> None:
        bad = [f for f in self.frames if f not in EVAL_FRAMES]
        if bad:
            raise ConfigError(f"config key 'eval.frames': unknown frame {bad[0]!r}; valid: {', '.join(EVAL_FRAMES)}")


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: data, model, loss, training and evaluation."""

    name: str = "pointstn"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str | None = param(None, help="run folder; default runs/<name>")
