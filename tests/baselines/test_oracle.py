"""The oracle_nn baseline: a true minimum over training shapes in the shape frame, posed with the truth."""

import pytest
import torch

from pointstn.baselines.oracle import OracleNN, dense_chamfer
from pointstn.baselines.retrieval import RetrievalBaseline
from pointstn.data.dataset import PreparedDataset
from pointstn.errors import PointstnError
from pointstn.ops.chamfer import chamfer_distance

FLOAT32 = {"rtol": 1e-5, "atol": 1e-6}
FLOAT64 = {"rtol": 1e-10, "atol": 1e-12}
POINTS = 512  # per cloud: the naive float64 references stay fast
EXACT_ZERO = 1e-9  # float32 rounding of a cloud against its own re-posed copy, squared


def _stack(dataset):
    return torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])


def _shape_chamfer(pred, gt):
    """Naive float64 shape-frame Chamfer of one (P, 3) prediction against one (M, 3) truth: each
    centred at its bounding-box centre, both divided by the truth's longest edge; squared nearest
    distances, means, both directions summed."""
    pred, gt = pred.double(), gt.double()
    edge = (gt.amax(0) - gt.amin(0)).max()
    pred = (pred - (pred.amax(0) + pred.amin(0)) / 2) / edge
    gt = (gt - (gt.amax(0) + gt.amin(0)) / 2) / edge
    d = ((pred[:, None, :] - gt[None, :, :]) ** 2).sum(-1)
    return float(d.amin(1).mean() + d.amin(0).mean())


@pytest.fixture(scope="module")
def train(tiny_dataset):
    return PreparedDataset(tiny_dataset, split="train", num_points=POINTS)


@pytest.fixture(scope="module")
def queries(tiny_dataset):
    return _stack(PreparedDataset(tiny_dataset, split="test", num_points=POINTS))


@pytest.fixture(scope="module")
def exhaustive(train):
    return OracleNN(search_points=None, shortlist=None).fit(train)


def _every_candidate(oracle, batch, b, *, training_poses):
    """Naive shape-frame Chamfer of every candidate for sample b: the objects in the true pose, then
    (with training_poses) every training view's cloud in its own pose."""
    truth = batch.points_camera[b]
    R, t = batch.rotation[b].double(), batch.translation[b].double()
    s = float(batch.extents[b].max())
    scores = [_shape_chamfer(s * q.double() / float(e) @ R.T + t, truth) for q, e in zip(oracle.clouds, oracle.scales)]
    if training_poses:
        for o, Rv, tv in zip(oracle.view_objects, oracle.view_rotations, oracle.view_translations):
            scores.append(_shape_chamfer(oracle.clouds[o].double() @ Rv.double().T + tv.double(), truth))
    return scores


def test_dense_chamfer_matches_chamfer_distance_in_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, 50, 3, generator=g, dtype=torch.float64)
    y = torch.rand(80, 3, generator=g, dtype=torch.float64)
    expected, _ = chamfer_distance(x, y.expand(7, -1, -1), batch_reduction=None)
    torch.testing.assert_close(dense_chamfer(x, y), expected, **FLOAT64)
    torch.testing.assert_close(dense_chamfer(x[:1], x[0]), torch.zeros(1, dtype=torch.float64), **FLOAT64)
    with pytest.raises(ValueError, match=r"\(O, P1, 3\)"):
        dense_chamfer(x[0], y)


@pytest.mark.parametrize("training_poses", [True, False])
def test_oracle_is_a_true_minimum_over_its_candidates(train, queries, exhaustive, training_poses):
    oracle = (
        exhaustive if training_poses else OracleNN(search_points=None, shortlist=None, training_poses=False).fit(train)
    )
    prediction = oracle.predict(queries)
    O = oracle.clouds.shape[0]
    for b in range(queries.image.shape[0]):
        every = _every_candidate(oracle, queries, b, training_poses=training_poses)
        assert len(every) == O + (len(train) if training_poses else 0)
        chosen = _shape_chamfer(prediction.points_camera[b], queries.points_camera[b])
        assert chosen == pytest.approx(min(every), rel=1e-5, abs=1e-9)
        best = min(range(len(every)), key=every.__getitem__)
        assert int(prediction.indices[b]) == (best if best < O else int(oracle.view_objects[best - O]))
        pose = (
            (queries.rotation[b], queries.translation[b])
            if best < O
            else (oracle.view_rotations[best - O], oracle.view_translations[best - O])
        )
        assert torch.equal(prediction.transform.rotation[b], pose[0])
        assert torch.equal(prediction.transform.translation[b], pose[1])


def test_oracle_bounds_retrieval_sample_by_sample(train, queries, exhaustive):
    oracle = exhaustive.predict(queries)
    retrieved = RetrievalBaseline().fit(train).predict(queries.image)
    true_pose_only = OracleNN(search_points=None, shortlist=None, training_poses=False).fit(train).predict(queries)
    for b in range(queries.image.shape[0]):
        truth = queries.points_camera[b]
        best = _shape_chamfer(oracle.points_camera[b], truth)
        assert best <= _shape_chamfer(retrieved.points_camera[b], truth) + 1e-12
        assert best <= _shape_chamfer(true_pose_only.points_camera[b], truth) + 1e-12


def test_oracle_is_exact_when_the_test_object_is_a_candidate(train):
    batch = _stack(train)
    oracle = OracleNN(search_points=256, coarse_points=64, shortlist=2).fit(train)
    prediction = oracle.predict(batch)
    rows = {o: r for r, o in enumerate(oracle.object_indices.tolist())}
    assert prediction.indices.tolist() == [rows[o] for o in batch.object_index.tolist()]
    torch.testing.assert_close(prediction.points_camera, batch.points_camera, **FLOAT32)
    for b in range(batch.image.shape[0]):
        assert _shape_chamfer(prediction.points_camera[b], batch.points_camera[b]) < EXACT_ZERO


class _Samples(torch.utils.data.Dataset):
    """A plain Dataset of `Sample`s (no `items`): the generic fitting path."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def test_prediction_is_posed_with_the_true_transform(tiny_dataset, queries):
    split = PreparedDataset(tiny_dataset, split="test", num_points=POINTS)
    oracle = OracleNN(shortlist=1, coarse_points=32, training_poses=False).fit(
        _Samples([split[0], split[len(split) - 1]]), batch_size=1
    )
    assert oracle.object_indices.tolist() == [int(split[0].object_index), int(split[len(split) - 1].object_index)]
    prediction = oracle.predict(queries)
    B = queries.image.shape[0]
    torch.testing.assert_close(prediction.transform.rotation, queries.rotation, rtol=0, atol=0)
    torch.testing.assert_close(prediction.transform.translation, queries.translation, rtol=0, atol=0)
    torch.testing.assert_close(prediction.transform.scale, queries.extents.amax(dim=1), rtol=0, atol=0)
    assert prediction.points.shape == prediction.points_camera.shape == (B, queries.points.shape[1], 3)
    torch.testing.assert_close(prediction.transform.apply(prediction.points), prediction.points_camera, **FLOAT32)
    assert prediction.indices[0] == 0 and prediction.indices[-1] == 1


def test_shortlist_follows_the_coarse_stage(train, queries):
    """With a shortlist of one, the winner is the coarse stage's minimum (checked with a naive reference)."""
    oracle = OracleNN(search_points=1024, coarse_points=100, shortlist=1, training_poses=False).fit(train)
    prediction = oracle.predict(queries)
    coarse_index = oracle._subsamples(queries.points_camera)[1]
    for b in range(queries.image.shape[0]):
        R, t = queries.rotation[b].double(), queries.translation[b].double()
        s = float(queries.extents[b].max())
        scores = [_shape_chamfer(s * q.double() @ R.T + t, coarse_index[b]) for q in oracle.coarse_clouds]
        assert int(prediction.indices[b]) == min(range(len(scores)), key=scores.__getitem__)


def test_fit_reads_one_view_per_object_and_validates(train):
    oracle = OracleNN(search_points=256).fit(train)
    objects = sorted({o for o, _ in train.items})
    assert oracle.object_indices.tolist() == objects
    assert oracle.clouds.shape == (len(objects), train.num_points, 3)
    assert oracle.search_clouds.shape == (len(objects), 256, 3) and oracle.coarse_clouds.shape[1] == 128
    torch.testing.assert_close(oracle.coarse_clouds, oracle.search_clouds[:, :128], rtol=0, atol=0)
    assert oracle.view_objects.tolist() == [objects.index(o) for o, _ in train.items]
    assert oracle.view_rotations.shape == (len(train), 3, 3) and oracle.view_translations.shape == (len(train), 3)
    assert OracleNN(training_poses=False).fit(train).view_objects is None
    with pytest.raises(PointstnError, match="before fit"):
        OracleNN().search(_stack(train))
    with pytest.raises(ValueError, match="coarse_points"):
        OracleNN(search_points=64, coarse_points=128)
    with pytest.raises(ValueError, match="shortlist"):
        OracleNN(shortlist=0)
