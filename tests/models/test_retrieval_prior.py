"""The retrieval prior: its memory, leave-one-object-out retrieval, the decoder's extra input, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pointstn.baselines.retrieval import RetrievalBaseline
from pointstn.config import ExperimentConfig, load_config
from pointstn.data.dataset import PreparedDataset
from pointstn.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    model_from_checkpoint,
    save_checkpoint,
)
from pointstn.errors import PointstnError
from pointstn.models.build import build_model
from pointstn.models.retrieval_prior import OUTSIDE, PRIOR_CHANNELS, RetrievalPrior, prior_queries

REPO = Path(__file__).resolve().parents[2]
POINTS = 64


def smoke(*overrides: str) -> ExperimentConfig:
    return load_config(
        REPO / "configs" / "smoke.yaml",
        ExperimentConfig,
        ["model.retrieval_prior.enabled=true", f"model.retrieval_prior.points={POINTS}", *overrides],
    )


def with_memory(model, prior: RetrievalPrior):
    """`model` with the memory of the fitted `prior` (what a training run's fit stores)."""
    model.retrieval_prior.adopt_shapes(prior.state_dict())
    model.retrieval_prior.load_state_dict(prior.state_dict())
    return model


@pytest.fixture(scope="module")
def train(tiny_dataset):
    return PreparedDataset(tiny_dataset, split="train", num_points=POINTS)


@pytest.fixture(scope="module")
def batch(train):
    return torch.utils.data.default_collate([train[i] for i in range(len(train))])


@pytest.fixture(scope="module")
def fitted(train):
    return RetrievalPrior(points=POINTS).fit(train, batch_size=4)


def test_a_training_view_retrieves_its_own_cloud_in_its_own_pose(fitted, batch):
    prior = fitted(batch.image)
    assert prior.shape == (len(batch.image), POINTS, 3) and prior.dtype == torch.float32
    # an identical image is at distance 0: the prior is the view's own object, posed as the view saw it
    torch.testing.assert_close(prior, batch.points_camera, rtol=1e-5, atol=1e-6)
    assert fitted.embeddings.shape[0] == len(batch.image) and fitted.clouds.shape[1:] == (POINTS, 3)


def test_excluding_the_own_object_retrieves_the_nearest_other_object(fitted, batch, train):
    prior = fitted(batch.image, exclude_objects=batch.object_index)
    reference = RetrievalBaseline().fit(train, batch_size=4)
    d = ((reference.embeddings[:, None, :].double() - reference.embeddings[None, :, :].double()) ** 2).sum(-1)
    own = reference.object_indices[reference.view_objects]
    d[own[None, :] == batch.object_index[:, None]] = float("inf")
    views = d.argmin(dim=1)
    assert (own[views] != batch.object_index).all()
    expected = (
        reference.clouds[reference.view_objects[views]] @ reference.rotations[views].transpose(1, 2)
        + reference.translations[views][:, None, :]
    )
    torch.testing.assert_close(prior, expected)


def test_an_unfitted_prior_and_a_wrong_point_count_are_clear_errors(tiny_dataset, batch):
    with pytest.raises(PointstnError, match="holds no training views"):
        RetrievalPrior(points=POINTS)(batch.image)
    with pytest.raises(PointstnError, match=f"stores {POINTS} points per object; the dataset gives 128"):
        RetrievalPrior(points=POINTS).fit(PreparedDataset(tiny_dataset, split="train", num_points=128))
    with pytest.raises(ValueError, match="kind 'none' has none"):
        build_model(smoke("model.decoder.kind=none"))


def test_prior_queries_are_the_mean_of_each_occupied_voxel_like_a_per_point_reference():
    g = torch.Generator().manual_seed(2)
    points = torch.rand(3, 200, 3, generator=g, dtype=torch.float64) * 1.2 - 0.6  # some outside the cube
    points[2] = 5.0  # a sample with nothing inside
    resolution = 4
    queries, channels = prior_queries(points, resolution=resolution)
    assert channels.shape == (*queries.shape[:2], PRIOR_CHANNELS)
    for b in range(3):
        cells: dict[tuple[int, ...], list[torch.Tensor]] = {}
        for p in points[b]:
            if (p.abs() <= 0.5).all():
                cell = tuple(min(int((c + 0.5) * resolution), resolution - 1) for c in p.tolist())
                cells.setdefault(cell, []).append(p)
        rows = channels[b, :, 0] == 1
        assert int(rows.sum()) == len(cells)
        assert (queries[b, ~rows] == OUTSIDE).all() and (channels[b, ~rows] == 0).all()
        got = {tuple(min(int((c + 0.5) * resolution), resolution - 1) for c in q.tolist()): (q, o)
               for q, o in zip(queries[b, rows], channels[b, rows, 1:])}
        assert sorted(got) == sorted(cells)
        for cell, members in cells.items():
            mean = torch.stack(members).mean(dim=0)
            centre = (torch.tensor(cell, dtype=torch.float64) + 0.5) / resolution - 0.5
            torch.testing.assert_close(got[cell][0], mean)
            torch.testing.assert_close(got[cell][1], (mean - centre) * resolution)
            assert got[cell][1].abs().max() <= 0.5 + 1e-9


def test_the_decoder_sees_the_prior_posed_in_the_predicted_frame_with_its_channels(fitted, batch):
    torch.manual_seed(0)
    model = with_memory(build_model(smoke()), fitted)
    seen = {}
    model.decoder.register_forward_hook(lambda module, args, out: seen.update(points=args[0], features=args[1]))
    images = batch.image[:3]
    out = model(images, gt_points_camera=batch.points_camera[:3], exclude_objects=batch.object_index[:3])
    first = 128 + 64  # coarse points + the 4^3 lattice
    posed = out.transform.inverse_apply(fitted(images, exclude_objects=batch.object_index[:3]))
    queries, channels = prior_queries(posed, resolution=model.decoder.resolution)
    assert seen["points"].shape == (3, first + queries.shape[1], 3) and (channels[..., 0] == 1).any()
    torch.testing.assert_close(seen["points"][:, first:], queries)
    extra = seen["features"][..., -PRIOR_CHANNELS:]
    torch.testing.assert_close(extra[:, first:], channels)
    assert torch.equal(extra[:, :first], torch.zeros(3, first, PRIOR_CHANNELS))
    assert seen["features"].shape[-1] == model.sampler.out_channels + PRIOR_CHANNELS
    assert torch.isfinite(out.points).all()


def test_a_checkpoint_carries_the_memory_and_rebuilds_the_model_alone(fitted, batch, tmp_path):
    torch.manual_seed(1)
    config = smoke()
    model = with_memory(build_model(config), fitted).eval()
    save_checkpoint(tmp_path / "best.pt", model=model, config=config, step=2)
    rebuilt, _ = model_from_checkpoint(tmp_path / "best.pt")
    assert torch.equal(rebuilt.retrieval_prior.embeddings, fitted.embeddings)
    with torch.no_grad():
        a, b = model(batch.image[:2]), rebuilt(batch.image[:2])
    assert torch.equal(a.points, b.points)
    other = build_model(smoke("model.retrieval_prior.points=32"))
    with pytest.raises(CheckpointError, match="shape mismatch: retrieval_prior.clouds"):
        load_model_state(other, load_checkpoint(tmp_path / "best.pt"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: setattr(m, "view_objects", m.view_objects[:-1]), "disagree on the number of views"),
        (lambda m: m.view_objects.fill_(99), "outside its 3 clouds"),
        (lambda m: setattr(m, "embeddings", m.embeddings[:, :10]), "10 dimensions"),
        (lambda m: m.clouds.view(-1)[0].fill_(float("nan")), "NaN or inf"),
    ],
)
def test_an_inconsistent_memory_from_a_checkpoint_is_a_clear_error(fitted, batch, damage, message):
    memory = RetrievalPrior(points=POINTS)
    memory.adopt_shapes(fitted.state_dict())
    memory.load_state_dict(fitted.state_dict())
    damage(memory)
    with pytest.raises(PointstnError, match=message):
        memory(batch.image[:1])
