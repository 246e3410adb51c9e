"""The retrieval prior: the nearest training view's object cloud, posed as that view saw it, as an extra
input of the decoder.

Retrieval (`pointstn.baselines.retrieval`: the nearest training image under the fixed silhouette
embedding -> its object's cloud in its pose) scores higher than every model trained here on the shape
frame's f@1% (docs/RESULTS.md), and per image the two are often right in different places (a session-24
throwaway: the better of the two per test image 0.160, retrieval 0.137). With `model.retrieval_prior.enabled` the model keeps the
retrieval memory as buffers (so checkpoints carry it and inference needs no dataset) and, per image,
places the retrieved cloud in the frame of the predicted transform, where its voxels join the decoder's
query points with extra channels (`prior_queries`): the decoder sees where a similar training object
would be, where inside each voxel its surface lies, and the image features at those places, and its
occupancy heads keep or carve it.

Memory (buffers, sized by `fit` or by the checkpoint being loaded, `adopt_shapes`):
    embeddings (V, D) float32: one per training view (`DEFAULT_EMBEDDING`);
    view_objects (V,) int64: the row of each view's object in `clouds`;
    rotations (V, 3, 3), translations (V, 3): each view's pose (camera from object, metres);
    clouds (O, P, 3) float32: each object's first P stored surface points, canonical metres;
    object_indices (O,) int64: the training split's object index of each row (for exclusion).

In training, a sample's own object is excluded (`exclude_objects`), so the prior is as good as it will
be on held-out objects: retrieving the sample's own object (another view of it) would hand the decoder
the answer.

Measured (docs/RESULTS.md, session 25): on the full config's 2000-step schedule it lifts test f@1% from
0.0743 to 0.0928, still far below retrieval's 0.1372; it is off by default.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import Tensor, nn

from pointstn.errors import PointstnError

log = logging.getLogger(__name__)

_BUFFERS = ("embeddings", "view_objects", "rotations", "translations", "clouds", "object_indices")
PRIOR_CHANNELS = 4  # the decoder's extra input channels: flag, offset from the voxel centre (3)
OUTSIDE = 2.0  # where padding query points go: outside the normalized cube, which the decoder ignores


def prior_queries(points: Tensor, *, resolution: int) -> tuple[Tensor, Tensor]:
    """A prior cloud (B, P, 3) in the normalized frame -> the decoder's query points for it (B, V, 3) and
    their extra input channels (B, V, PRIOR_CHANNELS).

    One query per voxel of the decoder's finest R^3 grid that the cloud occupies, at the mean of its
    points there: the prior's whole surface at a fixed cost (a few thousand voxels, not P points), and
    where inside each voxel it lies. Channels: 1 (the flag), then the mean's offset from the voxel centre
    in voxel sizes (in [-0.5, 0.5]); the decoder scatter-means its inputs per voxel, so these arrive
    scaled by the share of the voxel's queries that are the prior's. Points outside the cube are left
    out; samples with fewer voxels are padded with points at `OUTSIDE` and zero channels.
    """
    from pointstn.ops.voxel import packed_to_padded, voxel_centers, voxelize

    voxels = voxelize(points, points, resolution=resolution)
    means = voxels.features
    offsets = (means - voxel_centers(voxels.coords, resolution=resolution, dtype=means.dtype)) * resolution
    samples, batch = voxels.coords[:, 0], points.shape[0]
    queries, _ = packed_to_padded(means, samples, batch, pad_value=OUTSIDE)
    channels, _ = packed_to_padded(torch.cat((torch.ones_like(means[:, :1]), offsets), dim=1), samples, batch)
    return queries, channels


class RetrievalPrior(nn.Module):
    """images -> (B, P, 3) camera-frame cloud (metres) of each image's nearest training view.

    points: P, the points stored per training object (the decoder's prior cloud).
    """

    def __init__(self, *, points: int):
        super().__init__()
        if not isinstance(points, int) or points < 1:
            raise ValueError(f"points must be an int >= 1; got {points!r}")
        self.points = points
        self.register_buffer("embeddings", torch.zeros(0, 0))
        self.register_buffer("view_objects", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("rotations", torch.zeros(0, 3, 3))
        self.register_buffer("translations", torch.zeros(0, 3))
        self.register_buffer("clouds", torch.zeros(0, points, 3))
        self.register_buffer("object_indices", torch.zeros(0, dtype=torch.int64))
        self._checked = False  # check_memory passed since the buffers last changed (fit, adopt_shapes, a load)
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_checked", False))

    @property
    def fitted(self) -> bool:
        return self.embeddings.shape[0] > 0

    @torch.no_grad()
    def fit(self, dataset, *, batch_size: int = 64, progress: bool = False) -> RetrievalPrior:
        """Store every view of `dataset` (a `PreparedDataset` of `points` points per sample, normally
        the training split without augmentation), replacing what was stored."""
        from pointstn.baselines.retrieval import RetrievalBaseline

        if getattr(dataset, "num_points", self.points) != self.points:
            raise PointstnError(
                f"the retrieval prior stores {self.points} points per object; the dataset gives {dataset.num_points}"
            )
        start = time.perf_counter()
        memory = RetrievalBaseline().fit(dataset, batch_size=batch_size, progress=progress)
        device = self.clouds.device
        self.embeddings = memory.embeddings.to(device)
        self.view_objects = memory.view_objects.to(device)
        self.rotations = memory.rotations.to(device)
        self.translations = memory.translations.to(device)
        self.clouds = memory.clouds.to(device)
        self.object_indices = memory.object_indices.to(device)
        self._checked = False
        log.info(
            "retrieval prior: stored %d views of %d objects (%d points each) in %.0f s",
            self.embeddings.shape[0],
            self.clouds.shape[0],
            self.points,
            time.perf_counter() - start,
        )
        return self

    def adopt_shapes(self, state: dict[str, Tensor]) -> None:
        """Resize the memory's buffers to those of `state` (this module's entries of a state dict, keys
        without the module's prefix) so a strict load can fill them; a cloud of another point count is
        left alone (the load then reports the mismatch)."""
        clouds = state.get("clouds")
        if clouds is not None and tuple(clouds.shape[1:]) != (self.points, 3):
            return
        self._checked = False
        for name in _BUFFERS:
            if name in state:
                mine = getattr(self, name)
                setattr(self, name, torch.zeros(state[name].shape, dtype=mine.dtype, device=mine.device))

    def check_memory(self) -> None:
        """Raise PointstnError unless the buffers describe one consistent memory (a checkpoint's may not);
        the embedding's size is checked against the queries' in `forward`."""
        views, objects = self.embeddings.shape[0], self.clouds.shape[0]
        shapes_agree = (
            self.embeddings.ndim == 2
            and self.view_objects.shape == (views,)
            and self.rotations.shape == (views, 3, 3)
            and self.translations.shape == (views, 3)
            and self.object_indices.shape == (objects,)
        )
        problem = None
        if not shapes_agree:
            problem = "its buffers disagree on the number of views or objects"
        elif views and (int(self.view_objects.min()) < 0 or int(self.view_objects.max()) >= objects):
            problem = f"a view names an object outside its {objects} clouds"
        elif not all(torch.isfinite(t).all() for t in (self.embeddings, self.rotations, self.translations, self.clouds)):
            problem = "it holds NaN or inf"
        if problem:
            raise PointstnError(f"the retrieval prior's memory is inconsistent: {problem}")

    @torch.no_grad()
    def forward(self, images: Tensor, *, exclude_objects: Tensor | None = None) -> Tensor:
        """(B, 3, S, S) RGB in [0, 1] -> (B, P, 3) camera-frame metres. `exclude_objects` (B,): the
        training split's object index of each image, whose own views are never retrieved (training)."""
        from pointstn.baselines.embedding import embed
        from pointstn.baselines.retrieval import nearest_neighbours

        if not self.fitted:
            raise PointstnError(
                "the retrieval prior holds no training views: fit it on the training split "
                "(training does) or load a checkpoint trained with it"
            )
        if not self._checked:
            self.check_memory()
            self._checked = True
        queries = embed(images).to(self.embeddings.device)
        if queries.shape[1] != self.embeddings.shape[1]:
            raise PointstnError(f"the retrieval prior's memory is inconsistent: its embeddings have "
                                f"{self.embeddings.shape[1]} dimensions, the images' {queries.shape[1]}")
        groups = exclude = None
        if exclude_objects is not None:
            groups = self.object_indices[self.view_objects]
            exclude = exclude_objects.to(groups.device).long()
        views = nearest_neighbours(queries, self.embeddings, groups=groups, exclude=exclude)
        clouds = self.clouds[self.view_objects[views]]
        return clouds @ self.rotations[views].transpose(1, 2) + self.translations[views][:, None, :]


__all__ = ["OUTSIDE", "PRIOR_CHANNELS", "RetrievalPrior", "prior_queries"]
