"""The `oracle_nn` baseline: the training shape closest to the test shape (the upper bound of retrieval).

It reads ground truth by design. For a test sample with true pose (R, s, t) (s = its longest edge),
the candidates are
- every training object's normalized canonical cloud q_o in the true pose, `s R q_o + t`, and
- (`training_poses=True`, the default) every training view's cloud in that view's own pose,
  `R_v p_o + t_v` -- exactly the set `RetrievalBaseline` returns from, whatever its embedding.
The true pose alone does not bound retrieval: objects of one family need not share a canonical
frame (handles, symmetric axes), and the true scale s is not the best scale for a differently
proportioned shape, so a training view's own pose can fit better (seen on the test fixture).
Candidates are compared with the true camera-frame cloud in the evaluation's *shape* frame
(`pointstn.ops.metrics.to_eval_frame`: each cloud centred at its own bounding-box centre, both divided
by the truth's longest edge) by the PyTorch3D-default Chamfer (squared distances, means, both
directions summed). The winner's full cloud is returned in the winner's pose.

The search runs on random subsamples (`search_points`, default 1024, of both clouds; a fixed index
set, see `_subset`) in two stages, so all test samples x all training objects stay affordable on a CPU:
1. coarse: the first `coarse_points` of those subsamples against every candidate, with dense
   distance matrices (`dense_chamfer`);
2. fine: the `shortlist` best of stage 1 at `search_points` with
   `pointstn.ops.chamfer.chamfer_distance(..., batch_reduction=None)`; the minimum wins (ties: the
   lowest candidate, objects in the true pose first).
`shortlist=None` skips stage 1 (every candidate reaches stage 2: an exact minimum at
`search_points`); `search_points=None` searches on the full clouds.

Measured on /tmp/demo_ds (300 training objects, 240 val views; returned clouds 4096 points, truth
16384; shape frame, means over samples):

    python -c "from pointstn.baselines.oracle import measure_oracle; print(measure_oracle('/tmp/demo_ds', split='val'))"

    cd_l2 0.759 (x1000), cd_l1 0.0151, f@1% 0.354, f@2% 0.775 over 240 samples; 7 min wall, 0.79 GB
    peak RSS on 2 shared cores (300 + 2400 candidates per sample). With `training_poses=False`
    (add it to the call): cd_l2 0.760, cd_l1 0.0151, f@1% 0.355, f@2% 0.772 in 2 min 15 s -- on this
    data the training views' own poses almost never win, but without them the bound is not
    guaranteed per sample. (Retrieval on the same queries: cd_l2 45.2, f@1% 0.084.)
"""

from __future__ import annotations

from pathlib import Path

import torch

from pointstn.baselines import BaselinePrediction
from pointstn.baselines.retrieval import _batches, mean_shape_metrics
from pointstn.data.dataset import PreparedDataset, Sample
from pointstn.errors import PointstnError
from pointstn.models.types import SimilarityTransform
from pointstn.ops.chamfer import chamfer_distance
from pointstn.ops.metrics import to_eval_frame

_PAIR_BUDGET = 2**24  # distance-matrix entries per chunk of `dense_chamfer` (64 MB in float32)


def dense_chamfer(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(O,) PyTorch3D-default Chamfer between each cloud x[o] (O, P1, 3) and one cloud y (P2, 3).

    Squared Euclidean nearest distances, mean per cloud, both directions summed (as
    `chamfer_distance(x, y.expand(O, -1, -1), batch_reduction=None)`), from dense distance matrices
    |x|^2 + |y|^2 - 2 x.y computed in chunks of objects; distances are clamped at 0 against rounding.
    """
    if x.ndim != 3 or x.shape[-1] != 3 or y.ndim != 2 or y.shape[-1] != 3:
        raise ValueError(f"x must be (O, P1, 3) and y (P2, 3); got {tuple(x.shape)} and {tuple(y.shape)}")
    O, P1, _ = x.shape
    P2 = y.shape[0]
    if P1 == 0 or P2 == 0:
        raise ValueError(f"dense_chamfer needs non-empty clouds; got {P1} and {P2} points")
    y_sq = (y * y).sum(-1)
    per_chunk = max(1, _PAIR_BUDGET // (P1 * P2))
    out = []
    for start in range(0, O, per_chunk):
        xs = x[start : start + per_chunk]
        d = torch.baddbmm(
            y_sq[None, None, :] + (xs * xs).sum(-1, keepdim=True), xs, y.T.expand(xs.shape[0], 3, P2), alpha=-2.0
        ).clamp_(min=0.0)  # (o, P1, P2)
        out.append(d.amin(dim=2).mean(dim=1) + d.amin(dim=1).mean(dim=1))
    return torch.cat(out)


class OracleNN:
    """Nearest training shape to the true shape, in the shape frame (see the module docstring).

    search_points: points per cloud for the search (a fixed random subset; None: the full clouds).
    coarse_points: points per cloud in the coarse stage (a prefix of the search subset).
    shortlist: candidates passed from the coarse to the fine stage (None: all, an exhaustive search).
    training_poses: also offer every training view's cloud in that view's own pose (everything
        `RetrievalBaseline` can return), so the oracle bounds retrieval sample by sample; False keeps
        only the training objects in the true pose.
    """

    def __init__(
        self,
        *,
        search_points: int | None = 1024,
        coarse_points: int = 128,
        shortlist: int | None = 16,
        training_poses: bool = True,
    ):
        for name, value in (
            ("search_points", search_points),
            ("coarse_points", coarse_points),
            ("shortlist", shortlist),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None; got {value!r}")
        if search_points is not None and coarse_points > search_points:
            raise ValueError(f"coarse_points ({coarse_points}) must not exceed search_points ({search_points})")
        self.search_points, self.coarse_points, self.shortlist = search_points, coarse_points, shortlist
        self.training_poses = training_poses
        self.clouds = self.scales = self.object_indices = None  # (O, N, 3) canonical metres, (O,), (O,)
        self.search_clouds = self.coarse_clouds = None  # (O, K, 3), (O, Kc, 3) subsets of the normalized clouds
        self.view_objects = self.view_rotations = self.view_translations = None  # (V,), (V, 3, 3), (V, 3)

    def fit(self, dataset: PreparedDataset, *, batch_size: int = 64, progress: bool = False) -> OracleNN:
        """Store one canonical cloud per object of `dataset` (any Dataset of `Sample`) and, with
        `training_poses`, every view's pose (otherwise a `PreparedDataset` is read one view per
        object). `indices` of `predict` are rows of `object_indices` (the dataset's object_index
        values in ascending order)."""
        if len(dataset) == 0:
            raise PointstnError("cannot fit the oracle baseline on an empty dataset")
        items = getattr(dataset, "items", None)
        if items is not None and not self.training_poses:  # PreparedDataset: one view per object suffices
            first = {}
            for i, (o, _) in enumerate(items):
                first.setdefault(o, i)
            dataset = torch.utils.data.Subset(dataset, sorted(first.values()))
        clouds: dict[int, torch.Tensor] = {}
        scales: dict[int, float] = {}
        objects, rotations, translations = [], [], []
        for batch in _batches(dataset, batch_size=batch_size, progress=progress, what="reading training objects"):
            objects += batch.object_index.tolist()
            rotations.append(batch.rotation.float())
            translations.append(batch.translation.float())
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
        self.clouds = torch.stack([clouds[o] for o in ids])
        self.scales = torch.tensor([scales[o] for o in ids], dtype=torch.float32)
        self.object_indices = torch.tensor(ids, dtype=torch.int64)
        self.search_clouds, self.coarse_clouds = self._subsamples(self.clouds / self.scales[:, None, None])
        if self.training_poses:
            self.view_objects = torch.tensor([row[o] for o in objects], dtype=torch.int64)
            self.view_rotations, self.view_translations = torch.cat(rotations), torch.cat(translations)
        return self

    def predict(self, batch: Sample) -> BaselinePrediction:
        """The oracle's clouds for a batch of samples (a collated `Sample`; reads rotation,
        translation, extents and points_camera). The transform is the true one, or the winning
        training view's pose when that candidate won."""
        winners = self.search(batch)
        O = self.clouds.shape[0]
        rotation, translation = batch.rotation.float().clone(), batch.translation.float().clone()
        scale = batch.extents.float().amax(dim=-1).clone()
        indices = winners.clone()
        from_view = winners >= O
        if bool(from_view.any()):
            views = winners[from_view] - O
            indices[from_view] = self.view_objects[views]
            rotation[from_view] = self.view_rotations[views]
            translation[from_view] = self.view_translations[views]
            scale[from_view] = self.scales[indices[from_view]]
        transform = SimilarityTransform.stack(rotation, scale, translation)
        points = self.clouds[indices] / self.scales[indices][:, None, None]
        return BaselinePrediction(
            points=points, points_camera=transform.apply(points), transform=transform, indices=indices
        )

    def search(self, batch: Sample) -> torch.Tensor:
        """(B,) int64 winning candidate per sample: c < O is training object c in the true pose,
        c >= O is training view c - O in its own pose."""
        if self.clouds is None:
            raise PointstnError("OracleNN.predict was called before fit")
        truth = batch.points_camera.float()
        if truth.ndim != 3 or truth.shape[-1] != 3:
            raise ValueError(f"batch.points_camera must be (B, M, 3); got {tuple(truth.shape)}")
        rotation, scale = batch.rotation.float(), batch.extents.float().amax(dim=-1)
        O = self.clouds.shape[0]
        rows = torch.arange(O) if self.view_objects is None else torch.cat([torch.arange(O), self.view_objects])
        exhaustive = self.shortlist is None or self.shortlist >= rows.shape[0]
        truth, truth_coarse = self._subsamples(truth, coarse=not exhaustive)
        found = []
        for b in range(truth.shape[0]):
            candidates = torch.arange(rows.shape[0])
            if not exhaustive:
                x, y = self._candidates(self.coarse_clouds, rows, rotation[b], scale[b], truth_coarse[b])
                coarse = dense_chamfer(x, y[0])
                candidates = coarse.topk(self.shortlist, largest=False).indices.sort().values
            x, y = self._candidates(
                self.search_clouds, rows[candidates], rotation[b], scale[b], truth[b], views=candidates - O
            )
            fine, _ = chamfer_distance(x, y, batch_reduction=None)
            found.append(candidates[fine.argmin()])
        return torch.stack(found)

    def _candidates(self, clouds, rows, rotation, scale, truth, views=None):
        """Candidate clouds (C, K, 3) and the truth (C, K', 3), both in the shape frame. Candidate c is
        object rows[c] posed as scale R q (the true pose) when views[c] < 0, else by view views[c]'s pose.
        Translations cancel in the shape frame and are left out."""
        O = clouds.shape[0]
        views = torch.arange(rows.shape[0]) - O if views is None else views
        rotations = rotation.expand(rows.shape[0], 3, 3).clone()
        scales = scale.expand(rows.shape[0]).clone()
        own = views >= 0
        if bool(own.any()):
            rotations[own] = self.view_rotations[views[own]]
            scales[own] = self.scales[rows[own]]
        posed = scales[:, None, None] * clouds[rows] @ rotations.transpose(1, 2)
        return to_eval_frame(posed, truth.expand(rows.shape[0], -1, -1), "shape")

    def _subsamples(self, clouds: torch.Tensor, *, coarse: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, search_points, 3) and (B, coarse_points, 3) (None unless `coarse`) subsamples of (B, N, 3):
        a fixed random index set per N (`_subset`), the coarse one a prefix of the fine one."""
        N = clouds.shape[1]
        order = _subset(N, N if self.search_points is None else self.search_points)
        fine = clouds if order.shape[0] == N else clouds[:, order]
        rough = clouds[:, order[: self.coarse_points]] if coarse else None
        return fine, rough


def _subset(N: int, K: int) -> torch.Tensor:
    """(min(K, N),) int64: the first K of a fixed random permutation of range(N) (seed 0).

    The same indices for every cloud of N points, so a sample's subsample does not depend on its
    batch; a uniform random subset however the cloud is ordered. (Farthest-point sampling covers
    better but took 64 s for 300 clouds of 4096 points here, more than the whole search.)
    """
    return torch.randperm(N, generator=torch.Generator().manual_seed(0))[: min(K, N)]


def measure_oracle(
    root: str | Path,
    *,
    split: str = "val",
    num_points: int = 4096,
    batch_size: int = 64,
    progress: bool = False,
    **options,
) -> dict[str, float]:
    """Fit on the "train" split of dataset `root` (clouds of `num_points`), predict for every view of
    `split` (truth: all stored points); the means of `cloud_metrics` in the shape frame. `options` go to
    `OracleNN` (search_points, coarse_points, shortlist)."""
    train = PreparedDataset(root, split="train", num_points=num_points)
    oracle = OracleNN(**options).fit(train, batch_size=batch_size, progress=progress)
    queries = PreparedDataset(root, split=split)
    return mean_shape_metrics(
        (oracle.predict(batch), batch)
        for batch in _batches(queries, batch_size=batch_size, progress=progress, what=f"oracle for {split}")
    )


__all__ = ["OracleNN", "dense_chamfer", "measure_oracle"]
