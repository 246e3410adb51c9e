"""Training samples from a prepared dataset: one (object, view) pair per item.

Fields are composed per sample from the object's NPZ (docs/DATASET.md): the image, its mask, the
ground-truth surface points in the canonical and camera frames, the pose, K and the volume.
Augmentations keep every geometry label consistent with the image (`pointstn.data.augment`).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from pointstn.data.augment import Augmentation
from pointstn.data.format import read_manifest, read_object, resolve_inside
from pointstn.data.render.rig import VIEWPOINT_BINS
from pointstn.errors import PointstnError

_ARRAYS = ("surface_points", "surface_normals", "images", "masks", "rotations", "translations", "intrinsics",
           "view_bins")


class Sample(NamedTuple):
    """One view of one object. Batched by `torch.utils.data.default_collate` (a leading B axis).

    image: (3, S, S) float32 RGB in [0, 1]; mask: (S, S) float32 in {0, 1}.
    points / normals: (N, 3) float32 canonical frame, metres; points_camera: (N, 3) camera frame.
    rotation: (3, 3), translation: (3,) camera-from-object (x_cam = R x + t); intrinsics: (3, 3) K
    for the S x S image. volume: () m^3, NaN when unknown. extents: (3,) bounding-box edges, metres.
    object_index, view_index, family_index, bin_index: () int64 (names in the dataset's lists).
    """

    image: torch.Tensor
    mask: torch.Tensor
    points: torch.Tensor
    normals: torch.Tensor
    points_camera: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    intrinsics: torch.Tensor
    volume: torch.Tensor
    extents: torch.Tensor
    object_index: torch.Tensor
    view_index: torch.Tensor
    family_index: torch.Tensor
    bin_index: torch.Tensor


class PreparedDataset(torch.utils.data.Dataset):
    """The views of one split (None = every object) of a dataset made by `pointstn prepare-data`.

    num_points: ground-truth points per sample (None = all stored; a random subset when
        `deterministic` is False, the first `num_points` of the stored area-uniform samples otherwise).
    image_size: output side S; images are resized (bilinear, mask nearest) and K is scaled to match.
    augmentation: photometric and in-plane-roll augmentation (None = none).
    cache_objects: how many decoded objects each worker keeps in memory.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str | None,
        num_points: int | None = None,
        image_size: int | None = None,
        augmentation: Augmentation | None = None,
        deterministic: bool = True,
        cache_objects: int = 64,
        seed: int = 0,
    ):
        self.root = Path(root)
        manifest = read_manifest(self.root)
        if not manifest["complete"]:
            raise PointstnError(f"dataset {self.root} is unfinished; run prepare-data --resume first")
        if split is not None and split not in manifest["splits"]:
            raise PointstnError(f"dataset {self.root} has no split '{split}'; splits: {', '.join(manifest['splits'])}")
        self.object_ids: list[str] = list(manifest["objects"] if split is None else manifest["splits"][split])
        if not self.object_ids:
            raise PointstnError(f"split '{split}' of dataset {self.root} is empty")
        self.records = [manifest["objects"][o] for o in self.object_ids]
        self.families: list[str] = sorted({r["family"] for r in manifest["objects"].values()})
        self.bins: tuple[str, ...] = VIEWPOINT_BINS
        self.items = [(i, v) for i, r in enumerate(self.records) for v in range(r["num_views"])]
        stored = int(manifest["config"]["num_surface_points"])
        num_points = stored if num_points is None else num_points
        if num_points > stored:
            raise PointstnError(f"num_points={num_points} exceeds the {stored} surface points stored in {self.root}")
        self.split, self.num_points, self.deterministic, self.seed = split, num_points, deterministic, seed
        self.image_size = image_size or int(manifest["rig"]["image_size"])
        self.augmentation = augmentation
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._cache_size = cache_objects
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Vary random point subsets and augmentations per epoch (reproducibly)."""
        self._epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def _object(self, index: int) -> dict[str, np.ndarray]:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        arrays, _ = read_object(resolve_inside(self.root, self.records[index]["file"]), arrays=_ARRAYS)
        self._cache[index] = arrays
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return arrays

    def __getitem__(self, item: int) -> Sample:
        object_index, view = self.items[item]
        arrays, record = self._object(object_index), self.records[object_index]
        rng = np.random.default_rng([self.seed, self._epoch, item])
        if self.deterministic:
            chosen = slice(0, self.num_points)
        else:
            chosen = np.sort(rng.choice(len(arrays["surface_points"]), self.num_points, replace=False))
        points = torch.from_numpy(arrays["surface_points"][chosen].astype(np.float32))
        normals = torch.from_numpy(arrays["surface_normals"][chosen].astype(np.float32))
        image = torch.from_numpy(arrays["images"][view]).permute(2, 0, 1).float().div_(255.0)
        mask = torch.from_numpy(arrays["masks"][view]).float()
        rotation = torch.from_numpy(arrays["rotations"][view]).float()
        translation = torch.from_numpy(arrays["translations"][view]).float()
        intrinsics = torch.from_numpy(arrays["intrinsics"]).float()
        if self.image_size != image.shape[-1]:
            image, mask, intrinsics = resize_view(image, mask, intrinsics, self.image_size)
        if self.augmentation is not None:
            image, mask, rotation, translation = self.augmentation(image, mask, rotation, translation, intrinsics, rng)
        volume = record["volume_target"]
        return Sample(
            image=image,
            mask=mask,
            points=points,
            normals=normals,
            points_camera=points @ rotation.T + translation,
            rotation=rotation,
            translation=translation,
            intrinsics=intrinsics,
            volume=torch.tensor(float("nan") if volume is None else volume, dtype=torch.float32),
            extents=torch.tensor(record["extents"], dtype=torch.float32),
            object_index=torch.tensor(object_index),
            view_index=torch.tensor(view),
            family_index=torch.tensor(self.families.index(record["family"])),
            bin_index=torch.tensor(self.bins.index(str(arrays["view_bins"][view]))),
        )


def resize_view(image: torch.Tensor, mask: torch.Tensor, intrinsics: torch.Tensor, size: int):
    """Resize (3, S, S) / (S, S) to `size` and scale K so projections stay exact (pixel centres at integers)."""
    old = image.shape[-1]
    image = torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=size < old)[0]
    mask = torch.nn.functional.interpolate(mask[None, None], size=(size, size), mode="nearest")[0, 0]
    scale = size / old
    K = intrinsics.clone()
    K[0, 0] *= scale
    K[1, 1] *= scale
    K[0, 2] = (K[0, 2] + 0.5) * scale - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * scale - 0.5
    return image, mask, K
