"""Inference for robots: images -> point clouds, pose and grasp geometry (docs/ROBOTICS.md).

`Predictor` (predictor.py) is the API; images.py loads and validates inputs, camera.py turns an image
into the model's rig view and maps predictions back, geometry.py derives volumes and boxes, and
outputs.py writes the per-input files of `pointstn predict`.
"""

from pointstn.inference.geometry import UNITS, DerivedGeometry
from pointstn.inference.images import MAX_PIXELS, MIN_SIDE, ImageInputError, InputImage, load_image, load_images
from pointstn.inference.predictor import Pose, PredictionResult, Predictor, StageTimings

__all__ = [
    "MAX_PIXELS",
    "MIN_SIDE",
    "UNITS",
    "DerivedGeometry",
    "ImageInputError",
    "InputImage",
    "Pose",
    "PredictionResult",
    "Predictor",
    "StageTimings",
    "load_image",
    "load_images",
]
