"""Geometry core: nearest neighbours and Chamfer (PyTorch3D semantics), metrics, resampling, voxels,
volumes, rotations and boxes. The sparse-convolution layers live in `pointstn.ops.sparse` (imports
spconv on first use)."""

from pointstn.ops.chamfer import CHAMFER_BACKENDS, chamfer_distance
from pointstn.ops.knn import KNN, knn_gather, knn_points
from pointstn.ops.metrics import (
    CLOUD_METRIC_KEYS,
    EVAL_FRAMES,
    FScore,
    chamfer_l1,
    chamfer_l2,
    cloud_metrics,
    fscore,
    relative_threshold,
    report_cd_l2,
    to_eval_frame,
)
from pointstn.ops.sampling import PointSample, farthest_point_sample, random_resample

__all__ = [
    "CHAMFER_BACKENDS",
    "CLOUD_METRIC_KEYS",
    "EVAL_FRAMES",
    "KNN",
    "FScore",
    "PointSample",
    "chamfer_distance",
    "chamfer_l1",
    "chamfer_l2",
    "cloud_metrics",
    "farthest_point_sample",
    "fscore",
    "knn_gather",
    "knn_points",
    "random_resample",
    "relative_threshold",
    "report_cd_l2",
    "to_eval_frame",
]
