"""The prediction API: images in, point clouds with pose and grasp geometry out.

    predictor = Predictor.from_checkpoint("runs/demo/best.pt")
    [result] = predictor.predict("mug.png", box=(40, 30, 200, 210), scale_hint=0.12)
    result.points_camera        # (N, 3) float32, OpenCV camera frame of the input image, metres
    result.geometry.solid_volume_m3, result.geometry.obb_extents_m, result.pose.matrix()

Stages and their timings: load (decode, validate, render the model's view), model (forward pass of
the batch / batch size, point selection, frame conversion), geometry (volumes, oriented box).

The output cloud is the model's fine (decoder) cloud, as `pointstn test` evaluates it, cut to at most
`num_points` the way `pointstn test` does for the checkpoint (its `eval.resample`: farthest-point
sampling from the first point, or a random subset with seed 0; both deterministic); a cloud with no
more points is kept whole. When the decoder keeps fewer than MIN_CLOUD_POINTS points (an
under-trained checkpoint), the coarse cloud is used instead and `cloud_source` says "coarse".
Cropping, zoom and the scale hint: `pointstn.inference.camera` and docs/ROBOTICS.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from pointstn import __version__
from pointstn.errors import PointstnError
from pointstn.inference.camera import DEFAULT_FILL, ModelView, default_intrinsics, plan_view, render_view
from pointstn.inference.geometry import (
    UNITS,
    DerivedGeometry,
    canonical_longest_edge,
    derive_geometry,
    scale_hint_factor,
)
from pointstn.inference.images import InputImage, check_box, load_image, load_mask, mask_box, split_batch

log = logging.getLogger("pointstn.predict")

MIN_CLOUD_POINTS = 32
RESAMPLING = ("fps", "random")


@dataclass(frozen=True, eq=False)
class Pose:
    """canonical -> camera similarity: x_cam = scale * rotation @ p + translation (p normalized canonical).

    rotation: (3, 3) float64 proper rotation. scale: metres per normalized unit. translation: (3,) metres,
    the object's bounding-box centre in the camera frame.
    """

    rotation: np.ndarray
    scale: float
    translation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) normalized canonical points -> (N, 3) float64 camera-frame points (metres)."""
        return self.scale * np.asarray(points, np.float64) @ self.rotation.T + self.translation

    def matrix(self) -> np.ndarray:
        """(4, 4) float64 homogeneous [[s R, t], [0, 1]]."""
        out = np.eye(4)
        out[:3, :3] = self.scale * self.rotation
        out[:3, 3] = self.translation
        return out

    def to_json(self) -> dict:
        return {"rotation": self.rotation.tolist(), "scale_m": self.scale, "translation_m": self.translation.tolist(),
                "matrix_4x4": self.matrix().tolist()}


@dataclass(frozen=True)
class StageTimings:
    """Seconds per stage for one input; `model_s` is the batch's time divided by `batch_size`."""

    load_s: float
    model_s: float
    geometry_s: float
    batch_size: int


@dataclass(frozen=True, eq=False)
class PreparedInput:
    """One input ready for the model: the validated image, its view and the (3, S, S) float32 tensor."""

    image: InputImage
    view: ModelView
    tensor: Any
    background_whitened: bool
    load_s: float

    @property
    def model_input(self) -> np.ndarray:
        """(S, S, 3) uint8: what the model saw."""
        return np.rint(self.tensor.permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class PredictionResult:
    """One reconstruction. Arrays are read-only; units in `units` (also docs/ROBOTICS.md).

    name: the input's name (path or "image[i]").
    points_canonical: (N, 3) float32 normalized canonical frame (longest bounding-box edge ~ 1).
    points_canonical_m: (N, 3) float32 canonical frame in metres (= pose.scale * points_canonical).
    points_camera: (N, 3) float32 OpenCV camera frame of the input image, metres (= pose.apply(...)).
    pose: the canonical -> camera similarity.
    geometry: volumes, oriented box, longest edge (camera frame, metres).
    scale_source: "rig" (metric from the training rig) or "scale_hint".
    scale_factor: factor applied by the scale hint (1.0 without one); volumes scale by its cube.
    cloud_source: "fine" (decoder) or "coarse" (fallback, module docstring).
    resampling: how the cloud was cut to num_points: "fps", "random" or "none" (it fitted whole).
    view: the virtual camera that made the model input (crop, zoom).
    model_input: (S, S, 3) uint8 image the model saw.
    timings: per-stage seconds.
    """

    name: str
    points_canonical: np.ndarray
    points_canonical_m: np.ndarray
    points_camera: np.ndarray
    pose: Pose
    geometry: DerivedGeometry
    scale_source: Literal["rig", "scale_hint"]
    scale_factor: float
    cloud_source: Literal["fine", "coarse"]
    resampling: Literal["fps", "random", "none"]
    view: ModelView
    model_input: np.ndarray
    timings: StageTimings
    units: Mapping[str, str] = field(default_factory=lambda: MappingProxyType(dict(UNITS)))


def _read_only(values: np.ndarray, dtype) -> np.ndarray:
    out = np.array(values, dtype=dtype)
    out.flags.writeable = False
    return out


def _per_input(value: Any, count: int, what: str, *, is_single) -> list:
    """Broadcast a per-input argument: None, one value for all, or a list/tuple with one per input."""
    if value is None:
        return [None] * count
    if is_single(value):
        return [value] * count
    if isinstance(value, (list, tuple)) and len(value) == count:
        return list(value)
    raise PointstnError(f"{what}: give one value for all {count} inputs or a list of {count}; got {type(value).__name__}"
                        f"{f' of length {len(value)}' if isinstance(value, (list, tuple)) else ''}")


def _is_box(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) and len(value) == 4 and all(
        isinstance(v, (int, float, np.number)) for v in value)


class Predictor:
    """Runs a Reconstructor on user images (see the module docstring).

    Build with `Predictor.from_checkpoint(path)`, or `Predictor(model=model, config=config)` for a model
    in memory (any module with the Reconstructor interface and an `image_size` attribute).
    """

    def __init__(self, *, model, config, checkpoint_path: str | Path | None = None, checkpoint_step: int | None = None,
                 checkpoint_version: str | None = None, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.config = config
        self.device = device
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.checkpoint_step = checkpoint_step
        self.checkpoint_version = checkpoint_version
        self.load_s = 0.0

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "cpu", warmup: bool = True) -> Predictor:
        """Load a checkpoint safely (weights only, strict keys) and rebuild its model; `warmup` runs one
        blank forward pass so the first real prediction is not charged with one-off initialisation."""
        from pointstn.engine.checkpoint import model_from_checkpoint

        start = time.perf_counter()
        model, checkpoint = model_from_checkpoint(path, device=device)
        if checkpoint.version != __version__:
            log.warning("%s was written by pointstn %s; this is pointstn %s (same checkpoint format, weights match)",
                        path, checkpoint.version, __version__)
        predictor = cls(model=model, config=checkpoint.config, checkpoint_path=path, checkpoint_step=checkpoint.step,
                        checkpoint_version=checkpoint.version, device=device)
        if warmup:
            predictor.warmup()
        predictor.load_s = time.perf_counter() - start
        return predictor

    @property
    def image_size(self) -> int:
        return int(self.model.image_size)

    @property
    def fov_y_deg(self) -> float:
        return float(self.config.model.rig.fov_y_deg)

    @property
    def distance_m(self) -> float:
        return float(self.config.model.rig.distance_m)

    def warmup(self) -> None:
        import torch

        with torch.no_grad():
            self.model(torch.ones(1, 3, self.image_size, self.image_size, device=self.device))

    def prepare(self, image: Any, *, mask: Any = None, box: Sequence[float] | None = None,
                intrinsics: np.ndarray | None = None, zoom: Literal["rig", "fit"] = "rig",
                fill: float = DEFAULT_FILL, name: str | None = None) -> PreparedInput:
        """Validate one input and render the model's view of it (crop policy: pointstn.inference.camera).

        image: a path, PIL image, (H, W, C) array or (C, H, W) tensor, or an InputImage.
        mask: the object's mask (file or array of the image's size): locates the crop and whitens the
            background. box: (x0, y0, x1, y1) pixel edges; wins over the mask for locating the crop.
        intrinsics: (3, 3) K of the image in pixels; default: the rig's camera scaled to the image.
        name: how messages and results call the input (default: its path, or "image[0]").
        """
        import torch

        start = time.perf_counter()
        loaded = image if isinstance(image, InputImage) else load_image(image, name=name)
        size = loaded.size
        object_mask = loaded.mask
        if mask is not None:
            object_mask = load_mask(mask, size=size, name=loaded.name)
        if box is not None:
            box = check_box(box, size=size, name=loaded.name)
        elif object_mask is not None:
            box = mask_box(object_mask)
        K = default_intrinsics(height=size[0], width=size[1], fov_y_deg=self.fov_y_deg) if intrinsics is None \
            else intrinsics
        view = plan_view(source_size=size, intrinsics=K, box=box, size=self.image_size, fov_y_deg=self.fov_y_deg,
                         zoom=zoom, fill=fill)
        rgb = loaded.rgb
        whitened = mask is not None
        if whitened:  # an explicit mask: paint the background like the rig's plain one
            rgb = np.where(object_mask[..., None], rgb, np.uint8(255))
        tensor = torch.from_numpy(render_view(rgb, view)).permute(2, 0, 1).contiguous()
        return PreparedInput(image=loaded, view=view, tensor=tensor, background_whitened=whitened,
                             load_s=time.perf_counter() - start)

    def predict(self, images: Any, *, masks: Any = None, boxes: Any = None, intrinsics: Any = None,
                scale_hint: float | Sequence[float | None] | None = None, num_points: int = 4096,
                zoom: Literal["rig", "fit"] = "rig", fill: float = DEFAULT_FILL, batch_size: int = 16,
                resample: str | None = None) -> list[PredictionResult]:
        """Reconstruct every image (single or batched; the accepted kinds: pointstn.inference.images).

        masks, boxes, intrinsics, scale_hint: one for all inputs or a list with one per input (None
        entries allowed). scale_hint: the object's known longest edge in metres; every metric output is
        multiplied by hint / predicted longest edge (volumes by its cube). resample: "fps" or "random"
        (default: the checkpoint's eval.resample). Same input, same result.
        Raises PointstnError (ImageInputError) naming the first bad input.
        """
        singles = split_batch(images)
        count = len(singles)
        masks = _per_input(masks, count, "masks", is_single=lambda m: not isinstance(m, (list, tuple)))
        boxes = _per_input(boxes, count, "boxes", is_single=_is_box)
        intrinsics = _per_input(intrinsics, count, "intrinsics", is_single=lambda k: np.shape(k) == (3, 3))
        hints = _per_input(scale_hint, count, "scale_hint", is_single=lambda h: not isinstance(h, (list, tuple)))
        for hint in hints:
            if hint is not None:
                scale_hint_factor(hint, 1.0)  # validate before any work
        prepared = [self.prepare(image, mask=m, box=b, intrinsics=k, zoom=zoom, fill=fill, name=name)
                    for (image, name), m, b, k in zip(singles, masks, boxes, intrinsics, strict=True)]
        results: list[PredictionResult] = []
        for start in range(0, count, max(1, int(batch_size))):
            results += self.predict_prepared(prepared[start:start + batch_size], scale_hints=hints[start:start + batch_size],
                                             num_points=num_points, resample=resample)
        return results

    @property
    def default_resampling(self) -> str:
        """How clouds are cut to num_points: the checkpoint's `eval.resample` ("fps" or "random"), as
        `pointstn test` does for it."""
        return str(self.config.eval.resample)

    @staticmethod
    def _resample(clouds: Sequence[Any], *, num_points: int, how: str) -> list[np.ndarray]:
        """(P_b, 3) tensors -> float64 arrays of min(P_b, num_points) points. Clouds that already fit are
        kept whole, in order; larger ones by farthest-point sampling (start at the first point) or a
        random subset (seed 0, drawn per cloud so a result does not depend on its batch): deterministic."""
        import torch

        from pointstn.ops.sampling import farthest_point_sample, random_resample

        if how not in RESAMPLING:
            raise PointstnError(f"unknown resampling {how!r}; valid: {', '.join(RESAMPLING)}")
        out: list[np.ndarray | None] = [c.double().numpy() if c.shape[0] <= num_points else None for c in clouds]
        large = [b for b, c in enumerate(out) if c is None]
        if large and how == "random":
            for b in large:
                chosen = random_resample(clouds[b][None], K=num_points, generator=torch.Generator().manual_seed(0))
                out[b] = chosen.points[0].double().numpy()
        elif large:  # one batched farthest-point pass (per-cloud results do not depend on the batch)
            lengths = torch.tensor([clouds[b].shape[0] for b in large])
            padded = torch.zeros(len(large), int(lengths.max()), 3)
            for row, b in enumerate(large):
                padded[row, : clouds[b].shape[0]] = clouds[b]
            chosen = farthest_point_sample(padded, lengths, K=num_points).points
            for row, b in enumerate(large):
                out[b] = chosen[row].double().numpy()
        return out  # type: ignore[return-value]

    def predict_prepared(self, inputs: Sequence[PreparedInput], *, scale_hints: Sequence[float | None] | None = None,
                         num_points: int = 4096, resample: str | None = None) -> list[PredictionResult]:
        """One forward pass over `inputs` (a batch); see `predict`."""
        import torch

        if not inputs:
            return []
        if not isinstance(num_points, int) or num_points < 4:
            raise PointstnError(f"num_points must be an integer >= 4; got {num_points!r}")
        hints = list(scale_hints) if scale_hints is not None else [None] * len(inputs)
        start = time.perf_counter()
        with torch.no_grad():
            out = self.model(torch.stack([p.tensor for p in inputs]).to(self.device))
        clouds, sources = [], []
        for b in range(len(inputs)):
            fine = out.points[b, : int(out.lengths[b])]
            use_fine = fine.shape[0] >= MIN_CLOUD_POINTS
            clouds.append((fine if use_fine else out.coarse[b]).float().cpu())
            sources.append("fine" if use_fine else "coarse")
        how = resample or self.default_resampling
        canonical_clouds = self._resample(clouds, num_points=num_points, how=how)
        transform = out.transform
        model_s = (time.perf_counter() - start) / len(inputs)
        results = []
        for b, prepared in enumerate(inputs):
            start = time.perf_counter()
            canonical = canonical_clouds[b]
            rotation, scale, translation = prepared.view.to_camera(
                transform.rotation[b].double().cpu().numpy(), float(transform.scale[b]),
                transform.translation[b].double().cpu().numpy())
            factor, source = 1.0, "rig"
            if hints[b] is not None:
                factor, source = scale_hint_factor(hints[b], scale * canonical_longest_edge(canonical)), "scale_hint"
            pose = Pose(rotation=_read_only(rotation, np.float64), scale=scale * factor,
                        translation=_read_only(translation * factor, np.float64))
            camera = pose.apply(canonical)
            if not (np.isfinite(camera).all() and canonical.shape[0] > 0):
                raise PointstnError(f"{prepared.image.name}: the model produced no finite point cloud "
                                    "(NaN/inf outputs: is the checkpoint damaged?)")
            canonical_m = pose.scale * canonical
            geometry = derive_geometry(camera, canonical_m)
            results.append(PredictionResult(
                name=prepared.image.name,
                points_canonical=_read_only(canonical, np.float32),
                points_canonical_m=_read_only(canonical_m, np.float32),
                points_camera=_read_only(camera, np.float32),
                pose=pose, geometry=geometry, scale_source=source, scale_factor=factor, cloud_source=sources[b],
                resampling=how if clouds[b].shape[0] > num_points else "none",
                view=prepared.view, model_input=_read_only(prepared.model_input, np.uint8),
                timings=StageTimings(load_s=prepared.load_s, model_s=model_s,
                                     geometry_s=time.perf_counter() - start, batch_size=len(inputs)),
            ))
        return results
