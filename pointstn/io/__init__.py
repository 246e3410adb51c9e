"""File I/O: atomic writes, point clouds as PLY (binary/ASCII) and NPZ."""

from pointstn.io.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from pointstn.io.cloud import InvalidPointCloudError, PointCloud, colors_to_uint8
from pointstn.io.npz import load_cloud_npz, save_cloud_npz
from pointstn.io.ply import read_ply, write_ply

__all__ = [
    "InvalidPointCloudError",
    "PointCloud",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "colors_to_uint8",
    "load_cloud_npz",
    "read_ply",
    "save_cloud_npz",
    "write_ply",
]
