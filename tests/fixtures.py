"""The tiny dataset config the data tests share."""

from __future__ import annotations

from pointstn.config import from_dict
from pointstn.data.config import DatasetConfig

SMALL = {
    "name": "tiny",
    "seed": 3,
    "families": ["box", "mug", "ball"],
    "objects_per_family": 3,
    "views_per_object": 3,
    "num_surface_points": 2048,
    "rig": {"image_size": 64},
}


def small_config(**changes) -> DatasetConfig:
    return from_dict(DatasetConfig, {**SMALL, **changes})
