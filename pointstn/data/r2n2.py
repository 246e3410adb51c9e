"""ShapeNet as researchers already have it: 3D-R2N2 renderings + Occupancy Networks point clouds.

Layout read (nothing is converted or copied):

    <rendering_root>/<synset>/<model>/rendering/{00..23}.png       137 x 137 RGBA (3D-R2N2 release)
    <rendering_root>/<synset>/<model>/rendering/rendering_metadata.txt
    <points_root>/<synset>/<model>/pointcloud.npz                  OccNet: points, normals, loc, scale
    <points_root>/<synset>/{train,val,test}.lst                    OccNet splits (optional)

``rendering_root`` is the folder holding the synset folders (``.../ShapeNetRendering``); a folder that
contains ``ShapeNetRendering`` is accepted too. Each sample is exactly a ``pointstn.data.dataset.Sample``.

Metadata. Line ``v`` of ``rendering_metadata.txt`` describes ``v.png``: azimuth (deg), elevation (deg),
in-plane rotation (deg), distance ratio, field of view (deg). 3D-R2N2's Blender script
(``lib/blender_renderer.py``, ``setViewpoint``) puts the camera at ``distance = ratio * 1.75``
(``cfg.RENDERING.MAX_CAMERA_DIST``) on +x of a parent empty whose XYZ Euler angles are
``(-in_plane, -elevation, -azimuth)``; the camera looks at the origin with Blender +z up.

Intrinsics. That script never applies the metadata field of view: the renders use Blender's default
camera (35 mm lens, 32 mm sensor, fitted to the square image), whose projection has the NDC focal
length 2 * 35 / 32 = 2.1875 -- the ``K`` of PyTorch3D's ``R2N2.__getitem__`` / ``BlenderCamera`` (from
meshrcnn, read out of Blender). In pixels for an S x S image: ``f = 2.1875 * S / 2`` (149.84 px at 137,
a 49.1 deg field of view, not 25), principal point at the image centre ``(S - 1) / 2`` (OpenCV: pixel
centres at integer coordinates). The stored field of view is parsed and validated, then not used.

Extrinsics, step by step (ShapeNet coordinates ``p_sn``: the model.obj axes, +y up):
1. ``shapenet_extrinsics_opengl``: PyTorch3D's ``compute_extrinsic_matrix(az, el, d)`` (from meshrcnn):
   ``x_gl = RT @ [p_sn, 1]`` with the Blender/OpenGL camera frame (x right, y up, z backward). It
   composes the camera placement (azimuth about Blender +z, measured clockwise seen from above;
   elevation above Blender's xy plane) with Blender's OBJ import rotation ``(x, y, z) -> (x, -z, y)``.
2. ``pytorch3d_camera``: PyTorch3D's ``R2N2._compute_camera_calibration``:
   ``RT_p3d = RT.T @ diag(-1, 1, -1, 1)``, ``R = RT_p3d[:3, :3]``, ``T = RT_p3d[3, :3]``, row vectors:
   ``X_view = p_sn @ R + T`` in PyTorch3D's view frame (x left, y up, z forward).
3. ``camera_from_shapenet``: to OpenCV (x right, y down, z forward) with ``F = diag(-1, -1, 1)``:
   ``R_cv = F @ R.T``, ``t_cv = F @ T`` (= ``diag(1, -1, -1)`` applied to step 1), and the in-plane
   rotation: the Blender parent's x axis is the optical axis, so it rolls the camera about its own
   backward axis; in OpenCV ``x_cv' = Rz(-in_plane) @ x_cv``. PyTorch3D ignores this field (the
   R2N2 release stores 0 there, as far as we know); where it is 0 both agree exactly.
4. Object frame (``OBJECT_FROM_SHAPENET``, a documented choice): ShapeNet's +y-up axes are turned to
   our +z-up canonical frame with the same rotation Blender's OBJ importer applies,
   ``p_obj = A (p_sn - c)``, ``A: (x, y, z) -> (x, -z, y)`` (+90 deg about x; ShapeNet +y -> +z,
   ShapeNet +z -> -y) -- i.e. the object frame *is* the Blender world R2N2 rendered in, shifted so the
   origin ``c`` is the centre of the bounding box of the model's stored points (all of them, so the
   frame does not depend on ``num_points``). Hence ``R = R_cv @ A.T`` and ``t = R_cv @ c + t_cv``.

Point clouds. OccNet's ``sample_mesh.py`` normalises each mesh as ``(p_sn - loc) / scale`` (``loc`` the
bounding-box centre, ``scale`` the longest edge over ``1 - padding``) before sampling, and stores
``loc`` and ``scale``. We undo it, ``p_sn = points * scale + loc``, which is the frame R2N2 rendered
(OccNet computes ``loc``/``scale`` from the original ShapeNetCore model's bounding box; a file
without them is taken as already in ShapeNet coordinates), then apply step 4. Normals only rotate
(``scale`` is a positive scalar). Units are ShapeNetCore v1 units (models normalised to a
bounding-box diagonal of about 1), *not* metres; camera distance, translations,
``points_camera`` and ``extents`` share them. ``volume`` is NaN (unknown).

Images. RGB is composited over ``background`` with the PNG alpha; ``mask = alpha >= 128``. Any mode but
RGBA is refused. Images must be square; K follows their native size and the resize to ``image_size``.

Bad input. Missing roots, synset folders or split files, ids that are not a single path component
(e.g. ``../x``, which would escape a root), malformed metadata, missing PNGs, non-RGBA images and
non-finite or mis-shaped point arrays are one-line ``PointstnError``s naming the file. A listed model
with renderings but no ``pointcloud.npz`` (or the reverse) is skipped, not an error: it is logged and
kept in ``R2N2Dataset.skipped`` (OccNet and R2N2 do not list exactly the same models); a dataset
with no usable model is an error.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pointstn.data.augment import Augmentation
from pointstn.data.dataset import Sample, resize_view
from pointstn.data.render.rig import VIEWPOINT_BINS, Rig, View
from pointstn.errors import PointstnError

logger = logging.getLogger(__name__)

MAX_CAMERA_DISTANCE = 1.75  # 3D-R2N2 cfg.RENDERING.MAX_CAMERA_DIST; distance = ratio * this
BLENDER_FOCAL_NDC = 2.1875  # Blender default camera: 35 mm lens / (32 mm sensor / 2)
METADATA_NAME = "rendering_metadata.txt"
POINTCLOUD_NAME = "pointcloud.npz"
OBJECT_FROM_SHAPENET = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # y-up -> z-up
_OPENCV_FROM_PYTORCH3D = np.diag([-1.0, -1.0, 1.0])
_ID = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")
_BIN_RIG = Rig()  # only its viewpoint-bin thresholds are used


@dataclass(frozen=True, eq=False)
class CameraPose:
    """rotation (3, 3), translation (3,) float64: ``x_cam = rotation @ x + translation``, OpenCV camera."""

    rotation: np.ndarray
    translation: np.ndarray


@dataclass(frozen=True)
class SkippedModel:
    """A listed model left out of the dataset, and why."""

    object_id: str
    reason: str


@dataclass(frozen=True, eq=False)
class _Model:
    synset: str
    model: str
    rendering_dir: Path
    points_file: Path
    metadata: np.ndarray  # (V, 5) float64, one row per metadata line
    views: tuple[int, ...]


def parse_metadata(path: str | Path) -> np.ndarray:
    """``rendering_metadata.txt`` -> (V, 5) float64: azimuth, elevation, in-plane (deg), ratio, fov (deg)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PointstnError(f"cannot read R2N2 metadata {path}: {error}") from error
    while lines and not lines[-1].strip():  # trailing blank lines only: line v describes view v
        lines.pop()
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = [float(x) for x in line.split()]
        except ValueError:
            row = []
        if len(row) != 5 or not all(math.isfinite(x) for x in row) or not row[3] > 0 or not 0 < row[4] < 180:
            raise PointstnError(
                f"{path}: line {number} is not 'azimuth elevation in_plane distance_ratio fov' "
                f"(5 finite numbers, ratio > 0, 0 < fov < 180): {line.strip()!r}"
            )
        rows.append(row)
    if not rows:
        raise PointstnError(f"R2N2 metadata {path} holds no views")
    return np.asarray(rows, dtype=np.float64)


def shapenet_extrinsics_opengl(*, azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """(4, 4) PyTorch3D/meshrcnn ``compute_extrinsic_matrix``: ShapeNet -> Blender/OpenGL camera (step 1)."""
    a, e = -math.radians(azimuth_deg), -math.radians(elevation_deg)
    world_to_obj = np.array([
        [math.cos(a) * math.cos(e), math.sin(a) * math.cos(e), -math.sin(e)],
        [-math.sin(a), math.cos(a), 0.0],
        [math.cos(a) * math.sin(e), math.sin(a) * math.sin(e), math.cos(e)],
    ])
    obj_to_cam = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    extrinsics = np.eye(4)
    extrinsics[:3, :3] = obj_to_cam @ world_to_obj
    extrinsics[:3, 3] = -obj_to_cam @ np.array([distance, 0.0, 0.0])
    blender_import = np.eye(4)
    blender_import[:3, :3] = OBJECT_FROM_SHAPENET  # the OBJ importer's y-up -> z-up turn
    return extrinsics @ blender_import


def pytorch3d_camera(extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(4, 4) step-1 matrix -> PyTorch3D's R (3, 3), T (3,) with ``X_view = p_sn @ R + T`` (step 2)."""
    flipped = np.asarray(extrinsics, dtype=np.float64).T @ np.diag([-1.0, 1.0, -1.0, 1.0])
    return flipped[:3, :3], flipped[3, :3]


def camera_from_shapenet(
    *, azimuth_deg: float, elevation_deg: float, in_plane_deg: float, distance: float
) -> CameraPose:
    """OpenCV camera-from-ShapeNet pose of one R2N2 view (steps 1-3 of the module docstring)."""
    R_p3d, T_p3d = pytorch3d_camera(
        shapenet_extrinsics_opengl(azimuth_deg=azimuth_deg, elevation_deg=elevation_deg, distance=distance)
    )
    c, s = math.cos(math.radians(-in_plane_deg)), math.sin(math.radians(-in_plane_deg))
    to_opencv = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ _OPENCV_FROM_PYTORCH3D
    return CameraPose(rotation=to_opencv @ R_p3d.T, translation=to_opencv @ T_p3d)


def r2n2_intrinsics(image_size: int) -> np.ndarray:
    """(3, 3) float64 K in pixels of R2N2's Blender camera for an ``image_size`` square image."""
    focal, centre = BLENDER_FOCAL_NDC * image_size / 2, (image_size - 1) / 2
    return np.array([[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]])


def _check_id(value: object, what: str, source: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise PointstnError(f"{source}: {what} {value!r} is not a plain folder name (it could escape the data roots)")
    return value


def _read_points(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OccNet pointcloud.npz -> object-frame points (N, 3), normals (N, 3), ShapeNet-frame centre (3,)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in ("points", "normals", "loc", "scale") if key in data}
    except (OSError, ValueError, EOFError) as error:
        raise PointstnError(f"cannot read point cloud {path}: {' '.join(str(error).split())}") from error
    missing = sorted({"points", "normals"} - set(arrays))
    if missing:
        raise PointstnError(f"point cloud {path} lacks array(s) {missing}")
    points, normals = arrays["points"].astype(np.float64), arrays["normals"].astype(np.float64)
    loc = arrays.get("loc", np.zeros(3)).astype(np.float64).reshape(-1)
    scale = arrays.get("scale", np.ones(1)).astype(np.float64).reshape(-1)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0 or normals.shape != points.shape:
        raise PointstnError(
            f"point cloud {path}: points {points.shape} and normals {normals.shape} must both be (N, 3), N > 0"
        )
    if loc.shape != (3,) or scale.shape != (1,) or not scale[0] > 0:
        raise PointstnError(f"point cloud {path}: loc must be (3,) and scale a positive scalar")
    for name, array in (("points", points), ("normals", normals), ("loc", loc), ("scale", scale)):
        if not np.isfinite(array).all():
            raise PointstnError(f"point cloud {path}: array '{name}' holds NaN or inf values")
    shapenet = points * scale[0] + loc
    centre = (shapenet.min(axis=0) + shapenet.max(axis=0)) / 2
    return (shapenet - centre) @ OBJECT_FROM_SHAPENET.T, normals @ OBJECT_FROM_SHAPENET.T, centre


class R2N2Dataset(torch.utils.data.Dataset):
    """The views of the listed ShapeNet models (module docstring: layout, frames, conventions).

    synsets: synset ids to use (None = those of the split JSON, else every synset folder of the renderings).
    split_file: a JSON ``{split: {synset: [model, ...]}}`` or PyTorch3D's ``{split: {synset: {model:
        [view, ...]}}}``. Without it, ``split`` names OccNet's ``<points_root>/<synset>/<split>.lst``;
        ``split=None`` takes every model folder of the renderings.
    views: view numbers to use (None = every line of each model's metadata); intersected with a
        split file's per-model views.
    num_points: points per sample (None = all stored; the first ``num_points`` when ``deterministic``,
        else a random subset per item and epoch). image_size: output side S (137 = native).
    augmentation: as for ``PreparedDataset``. background: RGB 0-255 under transparent pixels.
    """

    def __init__(
        self,
        rendering_root: str | Path,
        points_root: str | Path,
        *,
        synsets: Sequence[str] | None = None,
        split_file: str | Path | None = None,
        split: str | None = "train",
        views: Sequence[int] | None = None,
        num_points: int | None = None,
        image_size: int = 137,
        augmentation: Augmentation | None = None,
        deterministic: bool = True,
        background: tuple[int, int, int] = (255, 255, 255),
        cache_objects: int = 16,
        seed: int = 0,
    ):
        self.rendering_root, self.points_root = _rendering_root(Path(rendering_root)), Path(points_root)
        if not self.points_root.is_dir():
            raise PointstnError(f"point-cloud root {self.points_root} is not a folder")
        if num_points is not None and num_points < 1:
            raise ValueError(f"num_points must be >= 1 or None, got {num_points}")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        if len(background) != 3 or not all(0 <= int(b) <= 255 for b in background):
            raise ValueError(f"background must be three values in 0-255, got {background!r}")
        if views is not None:
            if not views or any(not isinstance(v, (int, np.integer)) or v < 0 for v in views):
                raise ValueError(f"views must be a non-empty list of view numbers >= 0, got {views!r}")
            views = tuple(sorted({int(v) for v in views}))
        listing = self._listing(synsets, split_file, split)
        models: list[_Model] = []
        skipped: list[SkippedModel] = []
        for synset, entries in listing.items():
            for model, listed_views in entries.items():
                entry, reason = self._model(synset, model, listed_views, views)
                if entry is None:
                    skipped.append(SkippedModel(object_id=f"{synset}/{model}", reason=reason))
                elif entry.views:
                    models.append(entry)
        if skipped:
            logger.warning("R2N2: skipped %d listed model(s), e.g. %s: %s", len(skipped), skipped[0].object_id,
                           skipped[0].reason)
        if not models:
            raise PointstnError(f"no usable R2N2 model under {self.rendering_root} and {self.points_root} "
                                f"(split {split!r}, {len(skipped)} skipped)")
        self.models, self.skipped = models, tuple(skipped)
        self.object_ids: list[str] = [f"{m.synset}/{m.model}" for m in models]
        self.families: list[str] = sorted(listing)  # every listed synset, so indices agree across splits
        self.bins: tuple[str, ...] = VIEWPOINT_BINS
        self.items = [(i, v) for i, m in enumerate(models) for v in m.views]
        self.split, self.num_points, self.image_size = split, num_points, int(image_size)
        self.augmentation, self.deterministic, self.seed = augmentation, deterministic, seed
        self.background = np.asarray(background, dtype=np.float32)
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_size, self._epoch = cache_objects, 0

    def _listing(
        self, synsets: Sequence[str] | None, split_file: str | Path | None, split: str | None
    ) -> dict[str, dict[str, tuple[int, ...] | None]]:
        """synset -> model -> views listed for it (None = not restricted)."""
        if split_file is not None:
            table = _read_split_json(Path(split_file), split)
            source = str(split_file)
        else:
            table, source = None, str(self.rendering_root)
        if synsets is None:
            synsets = sorted(table) if table is not None else sorted(
                p.name for p in self.rendering_root.iterdir() if p.is_dir())
        listing = {}
        for synset in synsets:
            _check_id(synset, "synset", source)
            for root in (self.rendering_root, self.points_root):
                if not (root / synset).is_dir():
                    raise PointstnError(f"synset folder {root / synset} does not exist (choose synsets=...)")
            if table is not None:
                if synset not in table:
                    raise PointstnError(f"split file {split_file} lists no synset {synset} for split '{split}'")
                listing[synset] = table[synset]
            elif split is not None:
                listing[synset] = dict.fromkeys(_read_lst(self.points_root / synset / f"{split}.lst"))
            else:
                listing[synset] = dict.fromkeys(sorted(p.name for p in (self.rendering_root / synset).iterdir()
                                                       if p.is_dir()))
            for model in listing[synset]:
                _check_id(model, "model", source)
        return listing

    def _model(
        self, synset: str, model: str, listed_views: tuple[int, ...] | None, views: tuple[int, ...] | None
    ) -> tuple[_Model | None, str]:
        """The model's record, or None and the reason it is skipped."""
        rendering_dir = self.rendering_root / synset / model / "rendering"
        points_file = self.points_root / synset / model / POINTCLOUD_NAME
        if not rendering_dir.is_dir():
            return None, f"no renderings ({rendering_dir} is missing)"
        if not points_file.is_file():
            return None, f"no point cloud ({points_file} is missing)"
        metadata_file = rendering_dir / METADATA_NAME
        if not metadata_file.is_file():
            raise PointstnError(f"R2N2 metadata {metadata_file} is missing")
        metadata = parse_metadata(metadata_file)
        chosen = set(range(len(metadata)) if views is None else views)
        if listed_views is not None:
            chosen &= set(listed_views)
        beyond = sorted(v for v in chosen if v >= len(metadata))
        if beyond:
            raise PointstnError(f"{metadata_file} has {len(metadata)} views; view(s) {beyond} were requested")
        return _Model(synset, model, rendering_dir, points_file, metadata, tuple(sorted(chosen))), ""

    def set_epoch(self, epoch: int) -> None:
        """Vary random point subsets and augmentations per epoch (reproducibly)."""
        self._epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def pose(self, item: int) -> CameraPose:
        """Camera-from-object pose (float64, before augmentation) of ``item``."""
        object_index, view = self.items[item]
        return self._pose(object_index, view)

    def _pose(self, object_index: int, view: int) -> CameraPose:
        model = self.models[object_index]
        azimuth, elevation, in_plane, ratio, _ = model.metadata[view]
        camera = camera_from_shapenet(azimuth_deg=azimuth, elevation_deg=elevation, in_plane_deg=in_plane,
                                      distance=ratio * MAX_CAMERA_DISTANCE)
        centre = self._points(object_index)[2]
        return CameraPose(rotation=camera.rotation @ OBJECT_FROM_SHAPENET.T,
                          translation=camera.rotation @ centre + camera.translation)

    def _points(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        self._cache[index] = _read_points(self.models[index].points_file)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return self._cache[index]

    def _image(self, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                mode, size = image.mode, image.size
                pixels = np.asarray(image) if mode == "RGBA" else None
        except (OSError, UnidentifiedImageError) as error:
            raise PointstnError(f"cannot read R2N2 image {path}: {' '.join(str(error).split())}") from error
        if pixels is None:
            raise PointstnError(f"R2N2 image {path} has mode {mode}; RGBA (colour + alpha) is required")
        if size[0] != size[1]:
            raise PointstnError(f"R2N2 image {path} is {size[0]} x {size[1]}; square images are required")
        alpha = pixels[..., 3:4].astype(np.float32) / 255.0
        rgb = pixels[..., :3].astype(np.float32) * alpha + self.background * (1.0 - alpha)
        image = torch.from_numpy(rgb / 255.0).permute(2, 0, 1).clamp_(0.0, 1.0).contiguous()
        return image, torch.from_numpy((pixels[..., 3] >= 128).astype(np.float32))

    def __getitem__(self, item: int) -> Sample:
        object_index, view = self.items[item]
        model = self.models[object_index]
        points_all, normals_all, _ = self._points(object_index)
        count = len(points_all) if self.num_points is None else self.num_points
        if count > len(points_all):
            raise PointstnError(f"num_points={count} exceeds the {len(points_all)} points in {model.points_file}")
        rng = np.random.default_rng([self.seed, self._epoch, item])
        chosen = slice(0, count) if self.deterministic else np.sort(rng.choice(len(points_all), count, replace=False))
        points = torch.from_numpy(points_all[chosen].astype(np.float32))
        normals = torch.from_numpy(normals_all[chosen].astype(np.float32))
        image, mask = self._image(model.rendering_dir / f"{view:02d}.png")
        intrinsics = torch.from_numpy(r2n2_intrinsics(image.shape[-1])).float()
        pose = self._pose(object_index, view)
        rotation, translation = torch.from_numpy(pose.rotation).float(), torch.from_numpy(pose.translation).float()
        if self.image_size != image.shape[-1]:
            image, mask, intrinsics = resize_view(image, mask, intrinsics, self.image_size)
        if self.augmentation is not None:
            image, mask, rotation, translation = self.augmentation(image, mask, rotation, translation, intrinsics, rng)
        azimuth, elevation, in_plane, ratio, _ = model.metadata[view]
        view_bin = _BIN_RIG.viewpoint_bin(View(rotation=pose.rotation, translation=pose.translation,
                                               azimuth_deg=azimuth, elevation_deg=elevation, roll_deg=in_plane,
                                               distance_m=ratio * MAX_CAMERA_DISTANCE))
        return Sample(
            image=image,
            mask=mask,
            points=points,
            normals=normals,
            points_camera=points @ rotation.T + translation,
            rotation=rotation,
            translation=translation,
            intrinsics=intrinsics,
            volume=torch.tensor(float("nan"), dtype=torch.float32),
            extents=torch.from_numpy((points_all.max(axis=0) - points_all.min(axis=0)).astype(np.float32)),
            object_index=torch.tensor(object_index),
            view_index=torch.tensor(view),
            family_index=torch.tensor(self.families.index(model.synset)),
            bin_index=torch.tensor(self.bins.index(view_bin)),
        )


def _rendering_root(root: Path) -> Path:
    if (root / "ShapeNetRendering").is_dir():
        return root / "ShapeNetRendering"
    if not root.is_dir():
        raise PointstnError(f"R2N2 rendering root {root} is not a folder")
    return root


def _read_split_json(path: Path, split: str | None) -> dict[str, dict[str, tuple[int, ...] | None]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PointstnError(f"cannot read split file {path}: {' '.join(str(error).split())}") from error
    if not isinstance(data, dict) or split not in data:
        names = sorted(data) if isinstance(data, dict) else []
        raise PointstnError(f"split file {path} has no split {split!r}; splits: {names}")
    if not isinstance(data[split], dict):
        raise PointstnError(f"split file {path}: split '{split}' must map synset ids to models")
    table: dict[str, dict[str, tuple[int, ...] | None]] = {}
    for synset, models in data[split].items():
        if isinstance(models, list) and all(isinstance(m, str) for m in models):
            table[synset] = dict.fromkeys(models)
        elif isinstance(models, dict) and all(
            isinstance(v, list) and all(isinstance(i, int) and i >= 0 for i in v) for v in models.values()
        ):
            table[synset] = {model: tuple(v) for model, v in models.items()}
        else:
            raise PointstnError(f"split file {path}: synset {synset!r} must list model ids or map them to view lists")
    return table


def _read_lst(path: Path) -> list[str]:
    if not path.is_file():
        raise PointstnError(f"split list {path} does not exist (give split_file=..., or split=None for all models)")
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise PointstnError(f"cannot read split list {path}: {error}") from error
