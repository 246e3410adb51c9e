"""The dense path of grid-preserving sparse convolutions (pointstn.ops.sparse.dense_path).

On nearly full grids a SubMConv3d, or a stride-1 SparseConv3d that keeps the grid size, runs as one
dense conv3d. It must give spconv's sites and, in float64, spconv's values and gradients (and the
dense reference's); it must run exactly when the grid is full enough and large enough, and a decoder
with the path gives the decoder without it, values and gradients, at 1 and 2 threads."""

from __future__ import annotations

import pytest
import torch

from pointstn.models.sparse_unet import SparseUNetDecoder
from pointstn.ops.sparse import SparseConv3d, SparseConvTranspose3d, SubMConv3d, dense_path, make_sparse_tensor
from tests.ops.dense_reference import LayerCase, expected_out_shape, rel_err, site_keys, site_rows
from tests.ops.test_spconv_compat import FLOAT64_RTOL, assert_case, num_threads, random_coords, run_case, seeded

__all__ = ["num_threads"]  # the fixture, re-used

GRID_CASES = [LayerCase("subm", 3), LayerCase("conv", 3, 1, 1)]


def count_dense_calls_with(patch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one at every dense_convolution call the layers make while `patch` is active."""
    calls: list[int] = []
    original = dense_path.dense_convolution

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    patch.setattr("pointstn.ops.sparse.conv.dense_convolution", counted)
    return calls


@pytest.fixture
def count_dense_calls(monkeypatch):
    """Counts dense_convolution calls (and lets grids of any size take the path)."""
    monkeypatch.setattr(dense_path, "MIN_SITES", 0)
    return count_dense_calls_with(monkeypatch)


@pytest.mark.parametrize("density", [1.0, 0.95])
@pytest.mark.parametrize("shape", [(8, 8, 8), (5, 6, 7)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", GRID_CASES, ids=lambda c: c.name)
def test_dense_path_matches_spconv_and_the_dense_reference(case, shape, density, num_threads, count_dense_calls):
    gen = seeded("dense-path", case, shape, density, num_threads)
    coords = random_coords(gen, shape, density=density)
    if density == 1.0:
        assert coords.shape[0] == 2 * shape[0] * shape[1] * shape[2]
    dense = run_case(case, coords, shape, seeded("weights", case, shape), dense_path=True)
    assert len(count_dense_calls) == 1, "the layer did not take the dense path"
    assert_case(dense, expected_out_shape(case, shape), FLOAT64_RTOL)  # against the float64 dense reference

    sparse = run_case(case, coords, shape, seeded("weights", case, shape), dense_path=False)
    assert len(count_dense_calls) == 1, "dense_path=False must stay in spconv"
    # spconv's own computation: same sites; SubM keeps their order, so the upstream gradients drawn per
    # output row coincide and the gradients must agree too (for the conv, assert_case checked them
    # against the reference: its rows come in another order, so its upstream differs from spconv's)
    assert torch.equal(site_keys(dense.out_coords, shape), site_keys(sparse.out_coords, shape))
    order_d = torch.argsort(site_rows(dense.out_coords, shape))
    order_s = torch.argsort(site_rows(sparse.out_coords, shape))
    assert rel_err(dense.values[0][order_d], sparse.values[0][order_s]) < FLOAT64_RTOL
    if case.kind == "subm":
        assert torch.equal(dense.out_coords, sparse.out_coords)
        for name in ("input", "weight", "bias"):
            assert rel_err(dense.grads[name][0], sparse.grads[name][0]) < FLOAT64_RTOL, name


def _tensor(batch: int, shape, density: float, gen) -> object:
    coords = random_coords(gen, shape, density=density, batch_size=batch)
    return make_sparse_tensor(
        coords=coords, features=torch.randn(coords.shape[0], 3, generator=gen), spatial_shape=shape, batch_size=batch
    )


def test_runs_dense_only_on_full_enough_and_large_enough_grids():
    gen = torch.Generator().manual_seed(0)
    subm = SubMConv3d(3, 4, 3).geometry
    full_big = _tensor(4, (8, 8, 8), 1.0, gen)  # 2048 sites, all active
    assert dense_path.runs_dense(subm, full_big)
    assert not dense_path.runs_dense(subm, _tensor(3, (8, 8, 8), 1.0, gen))  # 1536 sites < MIN_SITES
    assert not dense_path.runs_dense(subm, _tensor(4, (8, 8, 8), 0.5, gen))  # half full
    assert dense_path.runs_dense(SparseConv3d(3, 4, 3, 1, 1).geometry, full_big)
    for layer in (
        SparseConv3d(3, 4, 3, 1, 0),  # shrinks the grid
        SparseConv3d(3, 4, 2, 2),  # strided
        SparseConv3d(3, 4, 3, 1, 1, indice_key="k"),  # an inverse convolution would need its pairs
        SparseConvTranspose3d(3, 4, 2, 2),
    ):
        assert not dense_path.runs_dense(layer.geometry, full_big), layer


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_decoder_with_dense_path_equals_decoder_without(training, num_threads):
    """A decoder whose coarsest level is a full grid (batch 4 of 8^3 at R = 32: the base config's case)
    gives the same cloud, occupancy logits and gradients with and without the dense path."""
    torch.manual_seed(0)
    results = []
    for enabled in (True, False):
        torch.manual_seed(1)
        decoder = (
            SparseUNetDecoder(in_channels=5, channels=(4, 6, 8), resolution=32, voxel_floor=1.0, dense_path=enabled)
            .double()
            .train(training)
        )
        gen = torch.Generator().manual_seed(2)
        lattice = (
            torch.stack(torch.meshgrid(*[torch.arange(8)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5
        ) / 8 - 0.5
        points = torch.cat([lattice.expand(4, -1, -1).double(), torch.rand(4, 300, 3, generator=gen).double() - 0.5], 1)
        features = torch.randn(4, points.shape[1], 5, generator=gen, dtype=torch.float64, requires_grad=True)
        targets = decoder.occupancy_targets(torch.rand(4, 500, 3, generator=gen).double() - 0.5)
        with pytest.MonkeyPatch.context() as patch:
            calls = count_dense_calls_with(patch)
            out = decoder(points, features, targets=targets)
        assert (len(calls) > 0) == enabled
        loss = (out.points * torch.randn(out.points.shape, generator=gen, dtype=torch.float64)).sum()
        loss = loss + sum(level.logits.sum() for level in out.levels)
        loss.backward()
        results.append((out, features.grad, {n: p.grad for n, p in decoder.named_parameters()}))
    (a, grad_a, params_a), (b, grad_b, params_b) = results
    assert torch.equal(a.lengths, b.lengths)
    assert rel_err(a.points, b.points) < FLOAT64_RTOL
    for la, lb in zip(a.levels, b.levels):
        assert torch.equal(site_keys(la.coords, (la.resolution,) * 3), site_keys(lb.coords, (lb.resolution,) * 3))
    assert rel_err(grad_a, grad_b) < FLOAT64_RTOL
    for name, grad in params_a.items():
        assert rel_err(grad, params_b[name]) < FLOAT64_RTOL, name
