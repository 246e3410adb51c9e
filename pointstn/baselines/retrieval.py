"""The `retrieval` baseline (Tatarchenko et al. 2019, "What do single-view 3D reconstruction networks
learn?"): the nearest training image under a fixed embedding -> that sample's ground-truth cloud, posed
by that training sample's pose.

`RetrievalBaseline.fit` embeds every training view once (`pointstn.baselines.embedding`; the default,
`silhouette`, was chosen by the measurement documented there) and keeps, per view, the embedding, the
pose and its object's row, and per object one canonical cloud and its longest edge. `predict` embeds
the query images (RGB only), finds the nearest training view (squared L2) and returns its object's
cloud placed as that view saw it: camera frame `R_train @ p + t_train` (metres), normalized canonical
`p / longest_edge`, and `SimilarityTransform(R_train, longest_edge, t_train)`.

Measured on /tmp/demo_ds (2400 training views; the 240 val views as queries; predicted clouds are the
first 4096 stored area-uniform points, the truth has 16384; shape frame, means over queries):

    python -c "from pointstn.baselines.retrieval import measure_retrieval; print(measure_retrieval('/tmp/demo_ds', split='val'))"

    cd_l2 45.24 (x1000), cd_l1 0.0921, f@1% 0.0835, f@2% 0.248 over 240 samples; 2 min 8 s wall
    (reading the dataset included) and 0.74 GB peak RSS on 2 shared cores.

The other embeddings: add `embedding='hog'` etc. (table in `pointstn.baselines.embedding`). The
oracle (`pointstn.baselines.oracle`, which knows the true shape and pose) reaches cd_l2 0.76 /
f@1% 0.354 on the same queries.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from pointstn.baselines import BaselinePrediction
from pointstn.baselines.embedding import DEFAULT_EMBEDDING, EMBEDDINGS, check_images, embed
from pointstn.data.dataset import PreparedDataset, Sample
from pointstn.errors import PointstnError
from pointstn.models.types import SimilarityTransform


def nearest_neighbours(
    queries: torch.Tensor, database: torch.Tensor, *, chunk_size: int = 1024, shortlist: int = 8,
    groups: torch.Tensor | None = None, exclude: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """(Q,) int64 index of the database row nearest (squared L2) to each query row.

    queries: (Q, D); database: (V, D). Per chunk of `chunk_size` queries, one matmul ranks every row
    (|e|^2 - 2 q.e); the `shortlist` best are re-scored exactly in float64 as sum((q - e)^2), so an
    identical row scores exactly 0. Ties go to the lowest index (among rows with bit-identical exact
    distances inside the shortlist).
    groups (V,) and exclude (Q,), int64, given together: query q never matches a row whose group is
    exclude[q] (leave-one-object-out retrieval among training views; -1 excludes nothing when groups
    are >= 0). A query whose every row is excluded is an error.
    """
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(
            f"queries (Q, D) and database (V, D) must share D; got {tuple(queries.shape)} and {tuple(database.shape)}"
        )
    if database.shape[0] == 0:
        raise ValueError("the database is empty")
    if chunk_size < 1 or shortlist < 1:
        raise ValueError(f"chunk_size and shortlist must be >= 1; got {chunk_size} and {shortlist}")
    if (groups is None) != (exclude is None):
        raise ValueError("groups and exclude come together")
    if groups is not None and (groups.shape != database.shape[:1] or exclude.shape != queries.shape[:1]):
        raise ValueError(
            f"groups must be (V,) = ({database.shape[0]},) and exclude (Q,) = ({queries.shape[0]},); "
            f"got {tuple(groups.shape)} and {tuple(exclude.shape)}"
        )
    database = database.float()
    squared_norms = (database * database).sum(dim=1)
    k = min(shortlist, database.shape[0])
    found = []
    for start in range(0, queries.shape[0], chunk_size):
        chunk = queries[start : start + chunk_size].float()
        approximate = squared_norms[None, :] - 2.0 * (chunk @ database.T)  # (q, V)
        excluded = None
        if groups is not None:
            excluded = groups[None, :] == exclude[start : start + chunk_size, None]  # (q, V)
            if excluded.all(dim=1).any():
                raise ValueError("a query excludes every database row")
            approximate = approximate.masked_fill(excluded, math.inf)
        candidates = approximate.topk(k, dim=1, largest=False).indices.sort(dim=1).values  # ascending index
        exact = ((chunk[:, None, :].double() - database[candidates].double()) ** 2).sum(dim=-1)  # (q, k)
        if excluded is not None:  # fewer than k allowed rows can leave excluded ones in the shortlist
            exact = exact.masked_fill(excluded.gather(1, candidates), math.inf)
        found.append(candidates.gather(1, exact.argmin(dim=1, keepdim=True))[:, 0])
    return torch.cat(found) if found else torch.zeros(0, dtype=torch.int64)


class RetrievalBaseline:
    """Nearest training image -> its ground-truth cloud in its own pose.

    embedding: one of `pointstn.baselines.embedding.EMBEDDINGS` (a fixed function of the RGB image).
    chunk_size: queries per distance matmul in `predict`.
    """

    def __init__(self, *, embedding: str = DEFAULT_EMBEDDING, chunk_size: int = 1024):
        if embedding not in EMBEDDINGS:
            raise ValueError(f"unknown embedding {embedding!r}; valid choices: {', '.join(EMBEDDINGS)}")
        self.embedding, self.chunk_size = embedding, chunk_size
        self.embeddings: torch.Tensor | None = None  # (V, D) one per training view
        self.view_objects = self.rotations = self.translations = None  # (V,), (V, 3, 3), (V, 3)
        self.clouds = self.scales = None  # (O, N, 3) canonical metres, (O,) longest edges
        self.object_indices = None  # (O,) the dataset's object_index of each stored cloud

    def fit(self, dataset: PreparedDataset, *, batch_size: int = 64, progress: bool = False) -> RetrievalBaseline:
        """Embed every view of `dataset` (any Dataset of `Sample`, normally the training split), in order.

        The returned `indices` of `predict` index this dataset. Each object's cloud is stored once (from
        its first view); every view of an object must carry the same number of points.
        """
        if len(dataset) == 0:
            raise PointstnError("cannot fit the retrieval baseline on an empty dataset")
        embeddings, objects, rotations, translations = [], [], [], []
        clouds: dict[int, torch.Tensor] = {}
        scales: dict[int, float] = {}
        for batch in _batches(dataset, batch_size=batch_size, progress=progress, what="embedding training views"):
            embeddings.append(embed(batch.image, name=self.embedding))
            rotations.append(batch.rotation.float())
            translations.append(batch.translation.float())
            objects.append(batch.object_index.long())
            for b, o in enumerate(batch.object_index.tolist()):
                if o not in clouds:
                    clouds[o] = batch.points[b].float().clone()
                    scales[o] = float(batch.extents[b].max())
        ids = sorted(clouds)
        sizes = {clouds[o].shape[0] for o in ids}
        if len(sizes) != 1:
            raise PointstnError(
                f"training objects carry different numbers of points {sorted(sizes)}; use a fixed num_points"
            )
        row = {o: r for r, o in enumerate(ids)}
        self.embeddings = torch.cat(embeddings)
        self.view_objects = torch.tensor([row[o] for o in torch.cat(objects).tolist()], dtype=torch.int64)
        self.rotations, self.translations = torch.cat(rotations), torch.cat(translations)
        self.clouds = torch.stack([clouds[o] for o in ids])
        self.scales = torch.tensor([scales[o] for o in ids], dtype=torch.float32)
        self.object_indices = torch.tensor(ids, dtype=torch.int64)
        return self

    def nearest(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) int64 index of the nearest training view of each image (B, 3, S, S)."""
        if self.embeddings is None:
            raise PointstnError("RetrievalBaseline.predict was called before fit")
        check_images(images)
        queries = embed(images, name=self.embedding)
        if queries.shape[1] != self.embeddings.shape[1]:
            raise ValueError(
                f"query embedding has {queries.shape[1]} dims, the training views {self.embeddings.shape[1]}"
            )
        return nearest_neighbours(queries, self.embeddings, chunk_size=self.chunk_size)

    def predict(self, images: torch.Tensor) -> BaselinePrediction:
        """Retrieve for RGB images (B, 3, S, S) in [0, 1]; see `BaselinePrediction` for the fields."""
        indices = self.nearest(images)
        rows = self.view_objects[indices]
        canonical = self.clouds[rows]  # (B, N, 3) metres
        rotation, translation, scale = self.rotations[indices], self.translations[indices], self.scales[rows]
        return BaselinePrediction(
            points=canonical / scale[:, None, None],
            points_camera=canonical @ rotation.transpose(1, 2) + translation[:, None, :],
            transform=SimilarityTransform.stack(rotation, scale, translation),
            indices=indices,
        )


def measure_retrieval(
    root: str | Path,
    *,
    split: str = "val",
    embedding: str = DEFAULT_EMBEDDING,
    num_points: int = 4096,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, float]:
    """Fit on the "train" split of dataset `root` (clouds of `num_points`), query with every view of
    `split` (truth: all stored points); the means of `cloud_metrics` in the shape frame."""
    train = PreparedDataset(root, split="train", num_points=num_points)
    baseline = RetrievalBaseline(embedding=embedding).fit(train, batch_size=batch_size, progress=progress)
    queries = PreparedDataset(root, split=split)
    return mean_shape_metrics(
        (baseline.predict(batch.image), batch)
        for batch in _batches(queries, batch_size=batch_size, progress=progress, what=f"retrieving for {split}")
    )


def mean_shape_metrics(pairs) -> dict[str, float]:
    """Means over samples of `cloud_metrics(prediction.points_camera, batch.points_camera, "shape")`
    for an iterable of (BaselinePrediction, Sample batch) pairs."""
    from pointstn.ops.metrics import CLOUD_METRIC_KEYS, cloud_metrics

    sums, count = dict.fromkeys(CLOUD_METRIC_KEYS, 0.0), 0
    for prediction, batch in pairs:
        scores = cloud_metrics(prediction.points_camera, batch.points_camera.float(), "shape")
        for key in CLOUD_METRIC_KEYS:
            sums[key] += float(scores[key].double().sum())
        count += batch.points_camera.shape[0]
    return {key: value / max(count, 1) for key, value in sums.items()} | {"samples": count}


def _batches(dataset, *, batch_size: int, progress: bool, what: str):
    """Sample batches of `dataset` in order (default collate, no workers: the caller owns the cores)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc=what, unit="batch")
    for batch in loader:
        yield batch if isinstance(batch, Sample) else Sample(*batch)


__all__ = ["RetrievalBaseline", "mean_shape_metrics", "measure_retrieval", "nearest_neighbours"]
