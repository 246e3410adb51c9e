"""The camera rig that renders the default data: intrinsics, viewpoint sampling, viewpoint bins.

Frames (DESIGN.md section 2): the camera frame is OpenCV (x right, y down, z forward), the object
frame has its origin at the bounding-box centre and +z up, units are metres. A view is the rigid
transform camera-from-object, ``x_cam = R @ x_obj + t``.

Geometry of a view. The camera sits at azimuth ``az`` (about object +z, from +x towards +y) and
elevation ``el`` (above the object's xy plane; negative = from below) at distance ``d`` from the
object origin and looks at that origin, with image "up" (-y) along the projection of object +z:

    forward z_cam = -(cos el cos az, cos el sin az, sin el)
    right   x_cam = (-sin az, cos az, 0)            (defined for every elevation, even +-90 deg)
    down    y_cam = z_cam x x_cam
    R = Rz(roll) @ [x_cam; y_cam; z_cam],  t = (0, 0, d)

``Rz(roll)`` rotates about the optical axis: the image content turns by ``roll`` degrees clockwise
as displayed (x right, y down). Because the rig always looks at the object origin, the object is
centred in the image and a sphere around the origin projects to a centred circle whatever the roll.

Distance trade-off. With a fixed field of view and a fixed distance, apparent size is a pure metric
cue: a network can read an object's size in metres from its size in pixels, and the camera-frame
depth of the object centre is the constant ``d``. A distance *range* [d0, d1] makes the depth of the
centre vary but leaves a scale ambiguity of d1/d0 (an object k times larger seen k times further looks
nearly identical), a floor of about (d1/d0 - 1) on relative size error and three times that on volume.
The default rig therefore uses a fixed distance (d0 == d1); a narrow range is supported for
robustness experiments and is recorded in the manifest so evaluation can state it.

Size coverage. The defaults (128 px, 30 deg vertical FOV, 1.0 m) keep a bounding sphere of radius
0.25 m (e.g. a 35 x 25 x 20 cm box) inside the image from every viewpoint. A 35 cm edge seen
side-on spans about 84 px, a 10 cm edge about 24 px and a 2 cm edge about 5 px: with metric scale in
128 px the smallest objects are necessarily small in the image (``Rig.projected_radius_px`` tells).

Viewpoint bins (for per-bin test metrics), checked in this order:
    "below"      elevation <  canonical_elevation_deg[0]   (default -10 deg)
    "top"        elevation >  canonical_elevation_deg[1]   (default  60 deg, up to near top-down)
    "roll"       |roll|    >  canonical_max_roll_deg       (default  15 deg), moderate elevation
    "canonical"  everything else
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pointstn.errors import PointstnError

VIEWPOINT_BINS: tuple[str, ...] = ("canonical", "below", "top", "roll")


MAX_IMAGE_SIZE = 1024  # pixels per side of a rendered view (refused at config time; see docs/SECURITY.md)

@dataclass(frozen=True, eq=False)
class View:
    """One sampled viewpoint.

    rotation: (3, 3) float64, proper rotation camera-from-object (OpenCV camera frame).
    translation: (3,) float64, metres; ``x_cam = rotation @ x_obj + translation``.
    """

    rotation: np.ndarray
    translation: np.ndarray
    azimuth_deg: float
    elevation_deg: float
    roll_deg: float
    distance_m: float

    def matrix(self) -> np.ndarray:
        """(4, 4) float64 homogeneous camera-from-object transform."""
        out = np.eye(4)
        out[:3, :3] = self.rotation
        out[:3, 3] = self.translation
        return out

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """Object-frame points (N, 3) -> camera-frame points (N, 3), metres."""
        points = np.asarray(points, dtype=np.float64)
        return points @ self.rotation.T + self.translation


def project(points_cam: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-frame points (N, 3) with K (3, 3) -> pixels (N, 2).

    OpenCV pixel convention: (u, v) = (column, row), the centre of pixel (0, 0) is at (0, 0).
    Points must be in front of the camera (z > 0).
    """
    points_cam = np.asarray(points_cam, dtype=np.float64)
    if points_cam.ndim != 2 or points_cam.shape[1] != 3:
        raise ValueError(f"points_cam must have shape (N, 3), got {points_cam.shape}")
    if np.any(points_cam[:, 2] <= 0):
        raise ValueError("project: every point must have z > 0 (in front of the camera)")
    homogeneous = points_cam @ np.asarray(intrinsics, dtype=np.float64).T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def rotation_about_z(angle_deg: float) -> np.ndarray:
    """(3, 3) rotation by ``angle_deg`` about +z (right-handed)."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def look_at_rotation(*, azimuth_deg: float, elevation_deg: float, roll_deg: float) -> np.ndarray:
    """(3, 3) camera-from-object rotation of a camera on the view sphere (see module docstring)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    forward = -np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    right = np.array([-math.sin(az), math.cos(az), 0.0])
    down = np.cross(forward, right)
    return rotation_about_z(roll_deg) @ np.stack([right, down, forward])


def _pair(value: Any, name: str) -> tuple[float, float]:
    pair = tuple(float(x) for x in value)
    if len(pair) != 2 or pair[0] > pair[1]:
        raise ValueError(f"Rig.{name} must be (low, high) with low <= high, got {value!r}")
    return pair  # type: ignore[return-value]


@dataclass(frozen=True)
class Rig:
    """The fixed, documented data rig (square images, OpenCV camera, metres, degrees).

    image_size: width == height in pixels.
    fov_y_deg: vertical (== horizontal) field of view.
    distance_range_m: camera-to-object-origin distance, sampled uniformly; equal ends = fixed.
    elevation_range_deg: sampled uniformly in angle (over-samples the poles on purpose).
    roll_range_deg, roll_probability: with this probability a view gets a roll drawn uniformly
        from the range, otherwise roll is 0.
    max_object_radius_m: bounding-sphere radius guaranteed to stay inside the image.
    canonical_elevation_deg, canonical_max_roll_deg: viewpoint-bin thresholds (module docstring).
    """

    image_size: int = 128
    fov_y_deg: float = 30.0
    distance_range_m: tuple[float, float] = (1.0, 1.0)
    elevation_range_deg: tuple[float, float] = (-50.0, 88.0)
    roll_range_deg: tuple[float, float] = (-45.0, 45.0)
    roll_probability: float = 0.3
    max_object_radius_m: float = 0.25
    canonical_elevation_deg: tuple[float, float] = (-10.0, 60.0)
    canonical_max_roll_deg: float = 15.0

    def __post_init__(self) -> None:
        for name in (
            "distance_range_m",
            "elevation_range_deg",
            "roll_range_deg",
            "canonical_elevation_deg",
        ):
            object.__setattr__(self, name, _pair(getattr(self, name), name))
        if int(self.image_size) != self.image_size or not 8 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"Rig.image_size must be an integer in [8, {MAX_IMAGE_SIZE}], got {self.image_size!r}")
        if not 0.0 < self.fov_y_deg < 170.0:
            raise ValueError(f"Rig.fov_y_deg must be in (0, 170), got {self.fov_y_deg}")
        if not (-90.0 <= self.elevation_range_deg[0] and self.elevation_range_deg[1] <= 90.0):
            raise ValueError(f"Rig.elevation_range_deg must lie in [-90, 90], got {self.elevation_range_deg}")
        if not 0.0 <= self.roll_probability <= 1.0:
            raise ValueError(f"Rig.roll_probability must be in [0, 1], got {self.roll_probability}")
        if self.max_object_radius_m <= 0 or self.distance_range_m[0] <= self.max_object_radius_m:
            raise ValueError(
                f"Rig.distance_range_m {self.distance_range_m} must start beyond "
                f"max_object_radius_m={self.max_object_radius_m} > 0"
            )
        radius_px = self.projected_radius_px(self.max_object_radius_m, self.distance_range_m[0])
        if radius_px > self.image_size / 2:
            raise ValueError(
                f"Rig: a sphere of radius {self.max_object_radius_m} m at {self.distance_range_m[0]} m projects "
                f"to radius {radius_px:.1f} px > half the image ({self.image_size / 2} px); "
                "increase the distance or the field of view, or lower max_object_radius_m"
            )

    @property
    def focal_px(self) -> float:
        """Focal length in pixels (fx == fy)."""
        return (self.image_size / 2) / math.tan(math.radians(self.fov_y_deg) / 2)

    def intrinsics(self) -> np.ndarray:
        """(3, 3) float64 K in pixels, OpenCV convention (principal point at the image centre,
        (size - 1) / 2, because pixel centres sit at integer coordinates)."""
        c = (self.image_size - 1) / 2
        return np.array([[self.focal_px, 0.0, c], [0.0, self.focal_px, c], [0.0, 0.0, 1.0]])

    def projected_radius_px(self, radius_m: float, distance_m: float) -> float:
        """Image radius (px) of a sphere of ``radius_m`` centred on the optical axis at ``distance_m``."""
        if distance_m <= radius_m:
            raise ValueError(f"distance_m={distance_m} must exceed radius_m={radius_m}")
        return self.focal_px * radius_m / math.sqrt(distance_m**2 - radius_m**2)

    def view(
        self,
        *,
        azimuth_deg: float,
        elevation_deg: float,
        roll_deg: float = 0.0,
        distance_m: float | None = None,
    ) -> View:
        """The view at the given angles (degrees); distance defaults to the near end of the range."""
        distance = self.distance_range_m[0] if distance_m is None else float(distance_m)
        rotation = look_at_rotation(azimuth_deg=azimuth_deg, elevation_deg=elevation_deg, roll_deg=roll_deg)
        return View(
            rotation=rotation,
            translation=np.array([0.0, 0.0, distance]),
            azimuth_deg=float(azimuth_deg),
            elevation_deg=float(elevation_deg),
            roll_deg=float(roll_deg),
            distance_m=distance,
        )

    def sample_view(self, rng: np.random.Generator) -> View:
        """Draw one view. Always consumes exactly five uniforms, so streams stay aligned across rigs."""
        u = rng.random(5)
        azimuth = 360.0 * u[0]
        elevation = self.elevation_range_deg[0] + u[1] * (self.elevation_range_deg[1] - self.elevation_range_deg[0])
        roll = 0.0
        if u[2] < self.roll_probability:
            roll = self.roll_range_deg[0] + u[3] * (self.roll_range_deg[1] - self.roll_range_deg[0])
        distance = self.distance_range_m[0] + u[4] * (self.distance_range_m[1] - self.distance_range_m[0])
        return self.view(
            azimuth_deg=azimuth,
            elevation_deg=elevation,
            roll_deg=roll,
            distance_m=distance,
        )

    def viewpoint_bin(self, view: View) -> str:
        """One of ``VIEWPOINT_BINS`` (thresholds and precedence in the module docstring)."""
        if view.elevation_deg < self.canonical_elevation_deg[0]:
            return "below"
        if view.elevation_deg > self.canonical_elevation_deg[1]:
            return "top"
        if abs(view.roll_deg) > self.canonical_max_roll_deg:
            return "roll"
        return "canonical"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-serialisable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rig:
        """Inverse of ``to_dict``; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PointstnError(f"unknown rig key(s) {unknown}; valid keys are {sorted(known)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as error:
            raise PointstnError(f"invalid rig: {error}") from error
