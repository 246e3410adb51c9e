"""`PointCloud`: the validated in-memory form of a point cloud that pointstn reads and writes.

Arrays are numpy, never torch, so that I/O does not need torch; `PointCloud.from_torch` converts.
The stored arrays are read-only views of the arrays passed in (no copy): the dataclass is frozen
and its arrays cannot be modified through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pointstn.errors import PointstnError

if TYPE_CHECKING:
    import torch

__all__ = ["InvalidPointCloudError", "PointCloud", "colors_to_uint8"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_MAX_LISTED_ROWS = 5


class InvalidPointCloudError(PointstnError, ValueError):
    """Arrays that do not form a valid point cloud (shape, dtype or non-finite values)."""


def _nonfinite_message(name: str, values: np.ndarray) -> str | None:
    """Describes the NaN/inf entries of an (N, 3) array, or returns None if there are none."""
    bad = ~np.isfinite(values)
    num_bad = int(bad.sum())
    if num_bad == 0:
        return None
    rows = np.flatnonzero(bad.any(axis=1))
    listed = ", ".join(str(int(r)) for r in rows[:_MAX_LISTED_ROWS])
    more = ", ..." if rows.size > _MAX_LISTED_ROWS else ""
    return (
        f"{name} contain {num_bad} non-finite value(s) (NaN/inf) in {rows.size} of {values.shape[0]} "
        f"points, at rows [{listed}{more}]"
    )


def _check_array(name: str, values: object, num_points: int | None) -> np.ndarray:
    if not isinstance(values, np.ndarray):
        raise InvalidPointCloudError(f"{name} must be a numpy array, got {type(values).__name__}")
    if values.ndim != 2 or values.shape[1] != 3:
        raise InvalidPointCloudError(f"{name} must have shape (N, 3), got {values.shape}")
    if num_points is not None and values.shape[0] != num_points:
        raise InvalidPointCloudError(
            f"{name} has {values.shape[0]} rows but points has {num_points}; they must match"
        )
    return values


def _read_only(values: np.ndarray) -> np.ndarray:
    view = values.view()
    view.flags.writeable = False
    return view


def colors_to_uint8(colors: np.ndarray) -> np.ndarray:
    """Converts (N, 3) colors to uint8: uint8 passes through, floats in [0, 1] become
    ``np.rint(colors * 255)`` (round half to even, so 0.5 -> 128 and 1/255 steps survive exactly).

    Floats outside [0, 1] or non-finite, and other dtypes, are rejected rather than clipped.
    """
    colors = _check_array("colors", colors, None)
    if colors.dtype == np.uint8:
        return colors
    if colors.dtype not in _FLOAT_DTYPES and colors.dtype != np.float16:
        raise InvalidPointCloudError(f"colors must be uint8 or floats in [0, 1], got dtype {colors.dtype}")
    message = _nonfinite_message("colors", colors)
    if message is not None:
        raise InvalidPointCloudError(message)
    if colors.size and (colors.min() < 0.0 or colors.max() > 1.0):
        raise InvalidPointCloudError(
            f"float colors must lie in [0, 1], got values in [{colors.min()}, {colors.max()}]"
        )
    return np.rint(colors.astype(np.float64) * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class PointCloud:
    """A point cloud: positions plus optional per-point normals and colors.

    Attributes:
        points: (N, 3) float32 or float64 positions, all finite. N = 0 is allowed.
        normals: (N, 3) float32 or float64, all finite (not required to be unit length), or None.
        colors: (N, 3) uint8 RGB, or None. Use `colors_to_uint8` for floats in [0, 1].
    """

    points: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None

    def __post_init__(self) -> None:
        points = _check_array("points", self.points, None)
        num_points = points.shape[0]
        fields = {"points": points}
        if self.normals is not None:
            fields["normals"] = _check_array("normals", self.normals, num_points)
        for name, values in fields.items():
            if values.dtype not in _FLOAT_DTYPES:
                raise InvalidPointCloudError(f"{name} must be float32 or float64, got dtype {values.dtype}")
            message = _nonfinite_message(name, values)
            if message is not None:
                raise InvalidPointCloudError(message)
        if self.colors is not None:
            colors = _check_array("colors", self.colors, num_points)
            if colors.dtype != np.uint8:
                raise InvalidPointCloudError(
                    f"colors must be uint8, got dtype {colors.dtype} (convert floats in [0, 1] "
                    "with colors_to_uint8)"
                )
            fields["colors"] = colors
        for name, values in fields.items():
            object.__setattr__(self, name, _read_only(values))

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    @classmethod
    def from_torch(
        cls,
        points: torch.Tensor,
        *,
        normals: torch.Tensor | None = None,
        colors: torch.Tensor | None = None,
    ) -> PointCloud:
        """Builds a cloud from tensors on any device (detached and copied; the tensors are not shared).

        Args:
            points: (N, 3) float16/bfloat16/float32/float64; half precision is widened to float32
                (exactly), float32/float64 keep their dtype.
            normals: (N, 3) floating tensor, same rules as `points`, or None.
            colors: (N, 3) uint8, or floats in [0, 1] (converted by `colors_to_uint8`), or None.
        """
        return cls(
            points=_tensor_to_numpy("points", points),
            normals=None if normals is None else _tensor_to_numpy("normals", normals),
            colors=None if colors is None else colors_to_uint8(_tensor_to_numpy("colors", colors)),
        )


def _tensor_to_numpy(name: str, tensor: torch.Tensor) -> np.ndarray:
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise InvalidPointCloudError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    tensor = tensor.detach()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.to(torch.float32)
    # A copy, so later in-place updates of the tensor (e.g. by an optimizer) cannot change the cloud.
    return np.array(tensor.cpu().numpy(), copy=True)
