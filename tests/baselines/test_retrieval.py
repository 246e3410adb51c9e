"""The retrieval baseline: fixed embeddings, exact nearest neighbours, posed clouds, determinism."""

import pytest
import torch

from pointstn.baselines.embedding import EMBEDDINGS, embed, estimate_foreground, hog_embedding
from pointstn.baselines.retrieval import RetrievalBaseline, mean_shape_metrics, nearest_neighbours
from pointstn.data.dataset import PreparedDataset
from pointstn.errors import PointstnError

FLOAT32 = {"rtol": 1e-5, "atol": 1e-6}


def _stack(dataset, indices=None):
    indices = range(len(dataset)) if indices is None else indices
    return torch.utils.data.default_collate([dataset[i] for i in indices])


@pytest.fixture(scope="module")
def train(tiny_dataset):
    return PreparedDataset(tiny_dataset, split="train")


@pytest.fixture(scope="module")
def fitted(train):
    return RetrievalBaseline().fit(train, batch_size=4)


def _reference_nearest(queries, database):
    """float64 squared L2, first minimum (the lowest index on exact ties)."""
    d = ((queries.double()[:, None, :] - database.double()[None, :, :]) ** 2).sum(-1)
    return d.argmin(dim=1)


def test_nearest_neighbours_matches_float64_reference():
    g = torch.Generator().manual_seed(0)
    database = torch.rand(300, 17, generator=g)
    database[200] = database[40]  # an exact duplicate: the lower index must win
    queries = torch.cat([torch.rand(50, 17, generator=g), database[[3, 200, 299]]])
    found = nearest_neighbours(queries, database, chunk_size=7, shortlist=5)
    assert torch.equal(found, _reference_nearest(queries, database))
    assert found[-3:].tolist() == [3, 40, 299]
    assert found.dtype == torch.int64 and found.shape == (53,)


def test_nearest_neighbours_rejects_bad_shapes():
    with pytest.raises(ValueError, match="share D"):
        nearest_neighbours(torch.zeros(2, 3), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="empty"):
        nearest_neighbours(torch.zeros(2, 3), torch.zeros(0, 3))


def test_estimate_foreground_separates_an_object_from_plain_and_gradient_backgrounds():
    S = 64
    v, u = torch.meshgrid(torch.linspace(0, 1, S), torch.linspace(0, 1, S), indexing="ij")
    plain = torch.tensor([0.2, 0.5, 0.7]).view(3, 1, 1).expand(3, S, S)
    gradient = torch.stack([0.2 + 0.5 * u, 0.8 - 0.6 * v, 0.4 + 0.2 * u * v])
    images = torch.stack([plain, gradient]).clone()
    inside = torch.zeros(S, S, dtype=torch.bool)
    inside[20:44, 24:40] = True
    images[:, :, inside] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1)
    soft = estimate_foreground(images)
    assert soft.shape == (2, S, S)
    assert bool((soft[:, inside] > 0.99).all()) and bool((soft[:, ~inside] < 0.01).all())


def test_every_embedding_has_a_fixed_dimension_and_is_deterministic():
    g = torch.Generator().manual_seed(1)
    dims = {}
    for size in (64, 96, 128):
        images = torch.rand(3, 3, size, size, generator=g)
        for name in EMBEDDINGS:
            first, again = embed(images, name=name), embed(images.clone(), name=name)
            assert torch.equal(first, again), name
            assert first.dtype == torch.float32 and first.shape[0] == 3 and bool(torch.isfinite(first).all())
            dims.setdefault(name, set()).add(first.shape[1])
    assert dims == {"silhouette": {1024}, "hog": {8100}, "grey": {1024}, "random_cnn": {1024}}


def test_hog_is_invariant_to_contrast_and_unit_norm():
    g = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, 128, 128, generator=g) * 0.5
    a, b = hog_embedding(images), hog_embedding(0.25 + 1.5 * images)
    torch.testing.assert_close(a, b, **FLOAT32)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(2), **FLOAT32)
    assert a.shape == (2, 15 * 15 * 36)


def test_embed_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown embedding 'sift'"):
        embed(torch.rand(1, 3, 8, 8), name="sift")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        embed(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="floating point"):
        embed(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="unknown embedding"):
        RetrievalBaseline(embedding="sift")


def test_training_images_retrieve_themselves(train, fitted):
    batch = _stack(train)
    prediction = fitted.predict(batch.image)
    assert torch.equal(prediction.indices, torch.arange(len(train)))
    torch.testing.assert_close(prediction.points_camera, batch.points_camera, **FLOAT32)
    torch.testing.assert_close(prediction.transform.rotation, batch.rotation, rtol=0, atol=0)
    scores = mean_shape_metrics([(prediction, batch)])
    assert scores["samples"] == len(train) and scores["cd_l2"] < 1e-6 and scores["f@1%"] == 1.0


def test_prediction_is_the_retrieved_items_cloud_in_its_pose(tiny_dataset, train, fitted):
    queries = _stack(PreparedDataset(tiny_dataset, split="test"))
    prediction = fitted.predict(queries.image)
    B, N = queries.image.shape[0], train.num_points
    assert prediction.points.shape == prediction.points_camera.shape == (B, N, 3)
    assert prediction.indices.shape == (B,) and prediction.indices.dtype == torch.int64
    for b, index in enumerate(prediction.indices.tolist()):
        item = train[index]
        R, t, p = item.rotation.double(), item.translation.double(), item.points.double()
        torch.testing.assert_close(prediction.points_camera[b].double(), p @ R.T + t, **FLOAT32)
        edge = float(item.extents.max())
        torch.testing.assert_close(prediction.points[b].double(), p / edge, **FLOAT32)
        assert float(prediction.transform.scale[b]) == pytest.approx(edge, rel=1e-7)
        torch.testing.assert_close(prediction.transform.translation[b], item.translation, rtol=0, atol=0)
    torch.testing.assert_close(prediction.transform.apply(prediction.points), prediction.points_camera, **FLOAT32)
    torch.testing.assert_close(
        prediction.transform.inverse_apply(prediction.points_camera), prediction.points, **FLOAT32
    )
    assert float(prediction.points.abs().max()) <= 0.5 + 1e-6


def test_retrieval_is_deterministic_and_batch_independent(tiny_dataset, train, fitted):
    queries = _stack(PreparedDataset(tiny_dataset, split="val")).image
    again = RetrievalBaseline().fit(train, batch_size=2)
    assert torch.equal(again.embeddings, fitted.embeddings)
    together = fitted.predict(queries)
    one_by_one = torch.cat([again.predict(queries[i : i + 1]).indices for i in range(queries.shape[0])])
    assert torch.equal(together.indices, one_by_one)
    assert torch.equal(together.points_camera, fitted.predict(queries).points_camera)


def test_fit_stores_each_object_once(train, fitted):
    objects = {o for o, _ in train.items}
    assert fitted.clouds.shape == (len(objects), train.num_points, 3)
    assert fitted.embeddings.shape[0] == fitted.rotations.shape[0] == len(train)
    for row, o in enumerate(fitted.object_indices.tolist()):
        first_view = next(i for i, (obj, _) in enumerate(train.items) if obj == o)
        assert torch.equal(fitted.clouds[row], train[first_view].points)


def test_predict_before_fit_is_an_error():
    with pytest.raises(PointstnError, match="before fit"):
        RetrievalBaseline().predict(torch.rand(1, 3, 64, 64))


def test_nearest_neighbours_skips_the_excluded_group_like_a_float64_reference():
    g = torch.Generator().manual_seed(1)
    database = torch.rand(120, 9, generator=g)
    groups = torch.randint(0, 6, (120,), generator=g)
    queries = torch.cat([torch.rand(20, 9, generator=g), database[[5, 77]]])  # two exact copies of rows
    exclude = torch.randint(0, 6, (22,), generator=g)
    exclude[-2:] = groups[[5, 77]]  # their own group: the copies must not be found
    found = nearest_neighbours(queries, database, chunk_size=4, shortlist=3, groups=groups, exclude=exclude)
    d = ((queries.double()[:, None, :] - database.double()[None, :, :]) ** 2).sum(-1)
    d[groups[None, :] == exclude[:, None]] = float("inf")
    assert torch.equal(found, d.argmin(dim=1))
    assert (groups[found] != exclude).all()
    # fewer allowed rows than the shortlist: excluded rows in it never win
    few = nearest_neighbours(database[:3], database[:4], shortlist=8, groups=torch.tensor([0, 0, 0, 1]),
                             exclude=torch.zeros(3, dtype=torch.int64))
    assert few.tolist() == [3, 3, 3]


def test_nearest_neighbours_exclusion_errors():
    database, groups = torch.rand(4, 3), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="excludes every database row"):
        nearest_neighbours(torch.rand(2, 3), database, groups=groups, exclude=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="come together"):
        nearest_neighbours(torch.rand(2, 3), database, groups=groups)
    with pytest.raises(ValueError, match="groups must be"):
        nearest_neighbours(torch.rand(2, 3), database, groups=groups, exclude=torch.zeros(3, dtype=torch.int64))
