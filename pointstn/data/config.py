"""The dataset-generation config (`configs/data/*.yaml`): what to make, how to view and render it.

Loaded with the same YAML rules as experiment configs (`pointstn.config`). The rig and the
appearance distribution are the renderer's own dataclasses, so their validation lives in one place.
Everything here is part of a dataset's identity: `--resume` refuses a folder made with another config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pointstn.config.convert import ConfigError, param
from pointstn.data.render.appearance import AppearanceSampler
from pointstn.data.render.rig import Rig

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitFractions:
    """Fractions of *objects* per split (never views: no object appears in two splits)."""

    train: float = param(0.8, min=0.0, max=1.0)
    val: float = param(0.1, min=0.0, max=1.0)
    test: float = param(0.1, min=0.0, max=1.0)

    def __post_init__(self) -> None:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"config section 'splits': train + val + test must be 1, got {total:g}")


@dataclass(frozen=True)
class MeshSourceConfig:
    """Objects from mesh files (`--meshes`): a folder, a glob, a file or a URDF."""

    spec: str = ""
    units: Literal["m", "cm", "mm"] = "m"
    up: Literal["z", "y"] = "z"
    family: str | None = None


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset: its objects (procedural families or meshes), views, rig and appearance."""

    name: str = "graspable_demo"
    seed: int = param(0, min=0, max=2**31 - 1)
    source: Literal["procedural", "meshes"] = "procedural"
    families: tuple[str, ...] = ()  # procedural families to use; empty = every family
    objects_per_family: int = param(24, min=1, max=100_000)
    meshes: MeshSourceConfig = field(default_factory=MeshSourceConfig)
    views_per_object: int = param(8, min=1, max=1000)
    num_surface_points: int = param(16384, min=64, max=1_000_000)
    splits: SplitFractions = field(default_factory=SplitFractions)
    rig: Rig = field(default_factory=Rig)
    appearance: AppearanceSampler = field(default_factory=AppearanceSampler)
    store_depth: bool = True

    def __post_init__(self) -> None:
        if self.source == "meshes" and not self.meshes.spec:
            raise ConfigError("config key 'meshes.spec': a mesh folder, glob or file is needed when source is 'meshes'")
