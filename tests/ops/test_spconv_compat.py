"""pointstn.ops.sparse against dense float64 convolutions evaluated at the active sites.

Every layer is compared, values and gradients (input features, weight, bias), with the dense
reference in tests/ops/dense_reference.py; site sets, grid sizes, errors, determinism at 2 threads,
pruning and the lazy, quiet import of spconv are checked too."""

from __future__ import annotations

import subprocess
import sys
import zlib
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from pointstn.errors import MissingDependencyError
from pointstn.ops.sparse import (
    FeatureWise,
    SparseConv3d,
    SparseConvTranspose3d,
    SparseInverseConv3d,
    SubMConv3d,
    backend,
    make_sparse_tensor,
    map_features,
    prune,
    replace_features,
    set_dense_path,
    sparse_coords,
    sparse_features,
    sparse_spatial_shape,
    to_dense,
)
from tests.ops.dense_reference import (
    LAYER_CASES,
    LayerCase,
    dense_layer,
    expected_out_shape,
    gather_sites,
    occupied_sites,
    rel_err,
    scatter_dense,
    site_keys,
)

FLOAT64_RTOL = 1e-10
FLOAT32_RTOL_CUDA = 1e-3  # spconv's CUDA kernels accumulate in float32 (and may use TF32)
BATCH = 2
IN_CHANNELS = 3
OUT_CHANNELS = 4
GRID_SHAPES = [(7, 7, 7), (8, 8, 8), (6, 7, 9)]


# ----------------------------------------------------------------------------- helpers


def seeded(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(parts).encode()))


def random_coords(gen: torch.Generator, shape, density: float, batch_size: int = BATCH) -> torch.Tensor:
    """Random distinct active sites (every batch item gets at least one), rows in random order."""
    occupied = torch.rand((batch_size, *shape), generator=gen) < density
    occupied.view(batch_size, -1)[:, 0] |= ~occupied.view(batch_size, -1).any(dim=1)
    coords = occupied.nonzero()
    return coords[torch.randperm(coords.shape[0], generator=gen)].int()


def make_layer(case: LayerCase, gen: torch.Generator, dtype=torch.float64, dense_path: bool = False) -> nn.Module:
    if case.kind == "subm":
        layer = SubMConv3d(IN_CHANNELS, OUT_CHANNELS, kernel_size=case.kernel)
    elif case.kind == "conv":
        layer = SparseConv3d(
            IN_CHANNELS, OUT_CHANNELS, kernel_size=case.kernel, stride=case.stride, padding=case.padding
        )
    elif case.kind == "transpose":
        layer = SparseConvTranspose3d(
            IN_CHANNELS, OUT_CHANNELS, kernel_size=case.kernel, stride=case.stride, padding=case.padding
        )
    else:
        layer = SparseInverseConv3d(IN_CHANNELS, OUT_CHANNELS, kernel_size=case.kernel, indice_key="down")
    layer = layer.to(dtype)
    set_dense_path(layer, dense_path)
    with torch.no_grad():  # random parameters of order 1, not the small initialisation
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen, dtype=dtype))
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen, dtype=dtype))
    return layer


@dataclass(frozen=True)
class CaseResult:
    out_coords: torch.Tensor
    out_shape: tuple[int, int, int]
    expected_coords: torch.Tensor  # exact rows (subm, inverse) or the site set (conv, transpose)
    exact_order: bool
    values: tuple[torch.Tensor, torch.Tensor]  # (sparse, dense reference) at the output sites
    grads: dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (sparse, dense reference)


def run_case(
    case: LayerCase, coords, shape, gen, *, train: bool = True, device: str = "cpu", dtype=torch.float64,
    dense_path: bool = False,
) -> CaseResult:
    """Run one layer (on `device` in `dtype`, optionally allowed the dense path) and its dense float64 CPU
    reference on random features."""
    layer = make_layer(case, gen, dense_path=dense_path).to(device, dtype).train(train)
    if case.kind == "inverse":  # the inverse reads the pairs cached by a strided conv on `coords`
        down = SparseConv3d(
            2,
            IN_CHANNELS,
            kernel_size=case.kernel,
            stride=case.stride,
            padding=case.padding,
            indice_key="down",
        ).to(device, dtype)
        x_features = torch.randn(coords.shape[0], 2, generator=gen, dtype=torch.float64).to(device, dtype)
        with torch.no_grad():
            downsampled = down(
                make_sparse_tensor(
                    coords=coords.to(device), features=x_features, spatial_shape=shape, batch_size=BATCH
                )
            )
        in_coords, grid_in = sparse_coords(downsampled).cpu(), sparse_spatial_shape(downsampled)
    else:
        in_coords, grid_in = coords, tuple(shape)
    leaf = torch.randn(in_coords.shape[0], IN_CHANNELS, generator=gen, dtype=torch.float64)
    sparse_leaf = leaf.to(device, dtype, copy=True).requires_grad_()
    if case.kind == "inverse":
        sparse_in = replace_features(downsampled, sparse_leaf)
    else:
        sparse_in = make_sparse_tensor(
            coords=in_coords.to(device), features=sparse_leaf, spatial_shape=grid_in, batch_size=BATCH
        )
    out = layer(sparse_in)
    out_coords = sparse_coords(out).cpu()
    upstream = torch.randn(out_coords.shape[0], OUT_CHANNELS, generator=gen, dtype=torch.float64)
    (sparse_features(out) * upstream.to(device, dtype)).sum().backward()

    ref_leaf = leaf.clone().requires_grad_()
    ref_weight = layer.weight.detach().cpu().double().clone().requires_grad_()
    ref_bias = layer.bias.detach().cpu().double().clone().requires_grad_()
    output_padding = (0, 0, 0)
    if case.kind == "inverse":  # makes the transposed grid equal the strided conv's input grid
        output_padding = tuple(
            r - ((q - 1) * case.stride - 2 * case.padding + case.kernel) for r, q in zip(shape, grid_in)
        )
    dense_out = dense_layer(
        case, scatter_dense(in_coords, ref_leaf, BATCH, grid_in), ref_weight, ref_bias, output_padding
    )
    reference = gather_sites(dense_out, out_coords)
    (reference * upstream).sum().backward()

    if case.kind in ("subm", "inverse"):
        expected, exact = (in_coords if case.kind == "subm" else coords), True
    else:
        expected, exact = occupied_sites(case, in_coords, BATCH, grid_in), False
    return CaseResult(
        out_coords=out_coords,
        out_shape=sparse_spatial_shape(out),
        expected_coords=expected,
        exact_order=exact,
        values=(sparse_features(out).detach().cpu().double(), reference.detach()),
        grads={
            "input": (sparse_leaf.grad.cpu().double(), ref_leaf.grad),
            "weight": (layer.weight.grad.cpu().double(), ref_weight.grad),
            "bias": (layer.bias.grad.cpu().double(), ref_bias.grad),
        },
    )


def assert_case(result: CaseResult, dense_shape, rtol: float) -> None:
    assert result.out_shape == tuple(dense_shape)
    if result.exact_order:
        assert torch.equal(result.out_coords, result.expected_coords.cpu())
    else:
        assert torch.equal(
            site_keys(result.out_coords, dense_shape), site_keys(result.expected_coords, dense_shape)
        )
    assert rel_err(*result.values) < rtol
    for name, (actual, expected) in result.grads.items():
        assert expected.abs().max() > 0, f"reference gradient for {name} is all zero"
        assert rel_err(actual, expected) < rtol, name


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def num_threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("shape", GRID_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.name)
def test_layer_matches_dense_reference(case, shape, num_threads):
    gen = seeded("dense", case, shape, num_threads)
    coords = random_coords(gen, shape, density=0.2)
    result = run_case(case, coords, shape, gen)
    assert_case(result, expected_out_shape(case, shape), FLOAT64_RTOL)


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.name)
def test_eval_mode_with_bias_matches_dense_reference(case, num_threads):
    """A biased spconv conv raises in eval mode on CPU; ours adds the bias outside spconv."""
    gen = seeded("eval", case, num_threads)
    shape = (6, 7, 9)
    result = run_case(case, random_coords(gen, shape, density=0.2), shape, gen, train=False)
    assert_case(result, expected_out_shape(case, shape), FLOAT64_RTOL)


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.name)
def test_single_active_site(case, num_threads):
    gen = seeded("single", case, num_threads)
    shape = (7, 8, 6)
    coords = torch.tensor([[1, 3, 0, 5]], dtype=torch.int32)
    result = run_case(case, coords, shape, gen)
    assert_case(result, expected_out_shape(case, shape), FLOAT64_RTOL)


def test_transpose_output_grids_are_2r_and_2r_minus_1():
    gen = seeded("grids")
    shape = (7, 8, 9)
    coords = random_coords(gen, shape, 0.1)
    x = make_sparse_tensor(
        coords=coords, features=torch.ones(coords.shape[0], 1), spatial_shape=shape, batch_size=BATCH
    )
    up2 = SparseConvTranspose3d(1, 1, kernel_size=2, stride=2)
    up3 = SparseConvTranspose3d(1, 1, kernel_size=3, stride=2, padding=1)
    assert sparse_spatial_shape(up2(x)) == (14, 16, 18)
    assert sparse_spatial_shape(up3(x)) == (13, 15, 17)
    assert sparse_coords(up2(x)).shape[0] == 8 * coords.shape[0]  # k2 s2 children never overlap


def test_k3_s1_p1_dilates_the_active_set_by_one_voxel():
    inner = torch.tensor([[0, 3, 3, 3]], dtype=torch.int32)
    corner = torch.tensor([[1, 0, 0, 0]], dtype=torch.int32)
    layer = SparseConv3d(1, 1, kernel_size=3, stride=1, padding=1)
    for coords, count in ((inner, 27), (corner, 8)):
        x = make_sparse_tensor(
            coords=coords, features=torch.ones(1, 1), spatial_shape=(7, 7, 7), batch_size=2
        )
        out = sparse_coords(layer(x))
        assert out.shape[0] == count
        assert (out[:, 1:] - coords[:, 1:]).abs().max() == 1
        assert torch.all(out[:, 0] == coords[0, 0])


def test_inverse_restores_the_exact_input_sites():
    gen = seeded("inverse-sites")
    coords = random_coords(gen, (8, 7, 9), density=0.3)
    x = make_sparse_tensor(
        coords=coords,
        features=torch.randn(coords.shape[0], 2, generator=gen),
        spatial_shape=(8, 7, 9),
        batch_size=BATCH,
    )
    down = SparseConv3d(2, 5, kernel_size=3, stride=2, padding=1, indice_key="d1")
    mid = SubMConv3d(5, 5, kernel_size=3, indice_key="s2")
    up = SparseInverseConv3d(5, 2, kernel_size=3, indice_key="d1")
    y = up(mid(mid(down(x))))  # the second SubMConv3d reuses the pairs the first one cached
    assert torch.equal(sparse_coords(y), coords)
    assert sparse_spatial_shape(y) == (8, 7, 9)


def test_shared_subm_key_matches_dense_reference(num_threads):
    """Two SubMConv3d layers sharing a key (the second reuses cached pairs) equal two dense convs."""
    gen = seeded("shared", num_threads)
    shape = (8, 6, 7)
    coords = random_coords(gen, shape, 0.25)
    leaf = torch.randn(coords.shape[0], 3, generator=gen, dtype=torch.float64, requires_grad=True)
    first = SubMConv3d(3, 3, kernel_size=3, indice_key="s").double()
    second = SubMConv3d(3, 3, kernel_size=3, indice_key="s").double()
    out = second(
        first(make_sparse_tensor(coords=coords, features=leaf, spatial_shape=shape, batch_size=BATCH))
    )
    case = LayerCase("subm", 3)
    # the dense chain must be re-masked to the active sites between the layers
    mask = scatter_dense(coords, torch.ones(coords.shape[0], 1, dtype=torch.float64), BATCH, shape)
    first_dense = (
        dense_layer(case, scatter_dense(coords, leaf, BATCH, shape), first.weight, first.bias) * mask
    )
    dense = dense_layer(case, first_dense, second.weight, second.bias)
    reference = gather_sites(dense, coords)
    assert torch.equal(sparse_coords(out), coords)
    assert rel_err(sparse_features(out), reference) < FLOAT64_RTOL
    (grad_sparse,) = torch.autograd.grad(sparse_features(out).sum(), leaf)
    (grad_dense,) = torch.autograd.grad(reference.sum(), leaf)
    assert rel_err(grad_sparse, grad_dense) < FLOAT64_RTOL


def test_non_contiguous_coords_are_handled():
    """mask.nonzero().int() is a transposed view; spconv alone misreads it as a different site set."""
    gen = seeded("noncontiguous")
    shape = (6, 6, 6)
    occupied = torch.rand((BATCH, *shape), generator=gen) < 0.3
    coords = occupied.nonzero().int()
    assert not coords.is_contiguous()
    case = LayerCase("conv", 3, 1, 1)
    result = run_case(case, coords, shape, gen)
    assert_case(result, shape, FLOAT64_RTOL)


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize(
    "case", [c for c in LAYER_CASES if c.kind != "inverse" or c.kernel == 3], ids=lambda c: c.name
)
def test_two_threads_are_deterministic_run_to_run(case):
    """Bitwise-equal outputs and gradients over repeated runs at 2 threads (the CPU-only spconv wheel races)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = seeded("determinism", case)
        shape = (12, 12, 12)
        coords = random_coords(gen, shape, density=0.5)
        channels = 16
        features = torch.randn(coords.shape[0], channels, generator=gen, dtype=torch.float64)
        down = SparseConv3d(
            channels,
            channels,
            kernel_size=case.kernel,
            stride=case.stride,
            padding=case.padding,
            indice_key="down",
        ).double()
        if case.kind == "subm":
            layer = SubMConv3d(channels, channels, kernel_size=case.kernel)
        elif case.kind == "conv":
            layer = SparseConv3d(
                channels, channels, kernel_size=case.kernel, stride=case.stride, padding=case.padding
            )
        elif case.kind == "transpose":
            layer = SparseConvTranspose3d(
                channels, channels, kernel_size=case.kernel, stride=case.stride, padding=case.padding
            )
        else:
            layer = SparseInverseConv3d(channels, channels, kernel_size=case.kernel, indice_key="down")
        layer = layer.double()

        def run():
            leaf = features.clone().requires_grad_()
            layer.zero_grad()
            down.zero_grad()
            x = make_sparse_tensor(coords=coords, features=leaf, spatial_shape=shape, batch_size=BATCH)
            out = layer(down(x) if case.kind == "inverse" else x)
            (sparse_features(out) ** 2).sum().backward()
            return [
                sparse_coords(out).clone(),
                sparse_features(out).detach().clone(),
                leaf.grad.clone(),
                layer.weight.grad.clone(),
                layer.bias.grad.clone(),
            ]

        first = run()
        assert coords.shape[0] > 1000  # enough sites for the threads to share work
        for _ in range(3):
            for expected, actual in zip(first, run()):
                assert torch.equal(expected, actual)
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- tensor helpers


def test_prune_keeps_the_subset_and_drops_stale_pairs(num_threads):
    """After prune, a SubMConv3d with an already-cached key rebuilds its pairs and equals the dense conv."""
    gen = seeded("prune", num_threads)
    shape = (9, 8, 7)
    coords = random_coords(gen, shape, 0.3)
    leaf = torch.randn(coords.shape[0], 3, generator=gen, dtype=torch.float64, requires_grad=True)
    before = SubMConv3d(3, 3, kernel_size=3, indice_key="s").double()
    after = SubMConv3d(3, 4, kernel_size=3, indice_key="s").double()
    x = before(make_sparse_tensor(coords=coords, features=leaf, spatial_shape=shape, batch_size=BATCH))
    keep = torch.rand(coords.shape[0], generator=gen) < 0.5
    pruned = prune(x, keep)
    assert torch.equal(sparse_coords(pruned), coords[keep])
    assert torch.equal(sparse_features(pruned), sparse_features(x)[keep])
    assert sparse_spatial_shape(pruned) == shape
    out = after(pruned)

    case = LayerCase("subm", 3)
    mask = scatter_dense(coords, torch.ones(coords.shape[0], 1, dtype=torch.float64), BATCH, shape)
    hidden = dense_layer(case, scatter_dense(coords, leaf, BATCH, shape), before.weight, before.bias) * mask
    kept_mask = scatter_dense(coords[keep], torch.ones(int(keep.sum()), 1, dtype=torch.float64), BATCH, shape)
    reference = gather_sites(dense_layer(case, hidden * kept_mask, after.weight, after.bias), coords[keep])
    assert torch.equal(sparse_coords(out), coords[keep])
    assert rel_err(sparse_features(out), reference) < FLOAT64_RTOL
    upstream = torch.randn(reference.shape, generator=gen, dtype=torch.float64)
    (grad_sparse,) = torch.autograd.grad((sparse_features(out) * upstream).sum(), leaf)
    (grad_dense,) = torch.autograd.grad((reference * upstream).sum(), leaf)
    assert rel_err(grad_sparse, grad_dense) < FLOAT64_RTOL


def test_prune_rejects_bad_masks():
    x = make_sparse_tensor(
        coords=torch.tensor([[0, 1, 1, 1], [1, 2, 2, 2]], dtype=torch.int32),
        features=torch.ones(2, 1),
        spatial_shape=(4, 4, 4),
        batch_size=2,
    )
    with pytest.raises(ValueError, match="remove every site"):
        prune(x, torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        prune(x, torch.ones(2))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        prune(x, torch.ones(3, dtype=torch.bool))


def test_inverse_after_prune_is_an_error():
    coords = torch.tensor([[0, 1, 1, 1], [0, 4, 4, 4], [1, 2, 3, 4]], dtype=torch.int32)
    x = make_sparse_tensor(coords=coords, features=torch.ones(3, 2), spatial_shape=(6, 6, 6), batch_size=2)
    y = SparseConv3d(2, 2, kernel_size=3, stride=2, padding=1, indice_key="d")(x)
    keep = torch.ones(sparse_coords(y).shape[0], dtype=torch.bool)
    keep[0] = False
    with pytest.raises(ValueError, match="no index pairs cached under indice_key 'd'"):
        SparseInverseConv3d(2, 2, kernel_size=3, indice_key="d")(prune(y, keep))


def test_to_dense_matches_a_loop_over_sites():
    gen = seeded("to_dense")
    shape = (5, 6, 7)
    coords = random_coords(gen, shape, 0.3)
    leaf = torch.randn(coords.shape[0], 3, generator=gen, dtype=torch.float64, requires_grad=True)
    dense = to_dense(make_sparse_tensor(coords=coords, features=leaf, spatial_shape=shape, batch_size=BATCH))
    expected = torch.zeros(BATCH, 3, *shape, dtype=torch.float64)
    for row, (b, i, j, k) in enumerate(coords.tolist()):
        expected[b, :, i, j, k] = leaf[row].detach()
    assert torch.equal(dense.detach(), expected)
    upstream = torch.randn(dense.shape, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad((dense * upstream).sum(), leaf)
    assert torch.equal(
        grad, upstream[coords[:, 0].long(), :, coords[:, 1].long(), coords[:, 2].long(), coords[:, 3].long()]
    )


def test_feature_maps_keep_sites_and_cached_pairs():
    gen = seeded("featurewise")
    shape = (6, 6, 6)
    coords = random_coords(gen, shape, 0.3)
    x = make_sparse_tensor(
        coords=coords,
        features=torch.randn(coords.shape[0], 4, generator=gen),
        spatial_shape=shape,
        batch_size=BATCH,
    )
    conv = SubMConv3d(4, 4, kernel_size=3, indice_key="s")
    y = conv(x)
    norm = FeatureWise(nn.BatchNorm1d(4)).train()
    z = FeatureWise(nn.ReLU())(norm(y))
    expected = torch.relu(
        (sparse_features(y) - sparse_features(y).mean(0))
        / torch.sqrt(sparse_features(y).var(0, unbiased=False) + norm.module.eps)
    )
    assert torch.allclose(sparse_features(z), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(sparse_coords(z), coords)
    assert torch.equal(sparse_features(map_features(z, lambda f: 2 * f)), 2 * sparse_features(z))
    again = SubMConv3d(4, 4, kernel_size=3, indice_key="s")(z)  # reuses the pairs cached by `conv`
    assert torch.equal(sparse_coords(again), coords)
    with pytest.raises(ValueError, match=r"\(N, C\) with N = "):
        replace_features(z, torch.ones(coords.shape[0] + 1, 4))


# ----------------------------------------------------------------------------- errors


def _coords(rows):
    return torch.tensor(rows, dtype=torch.int32)


@pytest.mark.parametrize(
    ("coords", "features", "message"),
    [
        (_coords([[0, 1, 1, 1]]).long(), torch.ones(1, 2), "int32"),
        (_coords([[0, 1, 1, 1]]).float(), torch.ones(1, 2), "int32"),
        (_coords([[0, 1, 1]]), torch.ones(1, 2), r"shape \(N, 4\)"),
        (_coords([[0, 1, 1, 1], [0, 4, 1, 1]]), torch.ones(2, 2), r"row 1 = \[0, 4, 1, 1\] is outside"),
        (_coords([[0, 1, 1, 1], [0, 1, 5, 1]]), torch.ones(2, 2), "row 1 .* is outside"),
        (_coords([[0, 1, 1, 6]]), torch.ones(1, 2), "row 0 .* is outside"),
        (_coords([[0, -1, 1, 1]]), torch.ones(1, 2), "row 0 .* is outside"),
        (_coords([[2, 1, 1, 1]]), torch.ones(1, 2), "batch_size 2"),
        (
            _coords([[0, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]]),
            torch.ones(3, 2),
            r"rows \[0, 2\] are all \[0, 1, 1, 1\]",
        ),
        (torch.zeros(0, 4, dtype=torch.int32), torch.ones(0, 2), "no sites"),
        (_coords([[0, 1, 1, 1]]), torch.ones(2, 2), "N = 1"),
        (_coords([[0, 1, 1, 1]]), torch.ones(1, 2, dtype=torch.int64), "floating-point"),
    ],
    ids=[
        "int64",
        "float",
        "three-columns",
        "i-range",
        "j-range",
        "k-range",
        "negative",
        "batch-range",
        "duplicate",
        "empty",
        "feature-rows",
        "feature-dtype",
    ],
)
def test_make_sparse_tensor_rejects_bad_input(coords, features, message):
    with pytest.raises(ValueError, match=message):
        make_sparse_tensor(coords=coords, features=features, spatial_shape=(4, 5, 6), batch_size=2)


def test_bad_grid_arguments_are_rejected():
    ok = {"coords": _coords([[0, 1, 1, 1]]), "features": torch.ones(1, 2)}
    with pytest.raises(ValueError, match="spatial_shape"):
        make_sparse_tensor(**ok, spatial_shape=(4, 4), batch_size=1)
    with pytest.raises(ValueError, match="batch_size"):
        make_sparse_tensor(**ok, spatial_shape=(4, 4, 4), batch_size=0)


def test_layer_configuration_errors():
    with pytest.raises(ValueError, match="odd kernel_size"):
        SubMConv3d(2, 2, kernel_size=2)
    with pytest.raises(ValueError, match="stride must be"):
        SparseConv3d(2, 2, kernel_size=3, stride=0)
    with pytest.raises(ValueError, match="kernel_size must be"):
        SparseConvTranspose3d(2, 2, kernel_size=(2, 2), stride=2)
    with pytest.raises(ValueError, match="indice_key"):
        SparseInverseConv3d(2, 2, kernel_size=3, indice_key=None)


def test_forward_errors_name_the_problem():
    coords = _coords([[0, 1, 1, 1], [1, 3, 3, 3]])
    x = make_sparse_tensor(coords=coords, features=torch.ones(2, 2), spatial_shape=(6, 6, 6), batch_size=2)
    with pytest.raises(ValueError, match=r"expects features \(N, 3\)"):
        SubMConv3d(3, 2)(x)
    with pytest.raises(ValueError, match="float64"):
        SubMConv3d(2, 2).double()(x)
    y = SparseConv3d(2, 2, kernel_size=3, stride=2, padding=1, indice_key="d")(x)
    with pytest.raises(ValueError, match="already cached"):
        SparseConv3d(2, 2, kernel_size=3, stride=2, padding=1, indice_key="d")(y)
    with pytest.raises(ValueError, match="kernel size"):
        SparseInverseConv3d(2, 2, kernel_size=2, indice_key="d")(y)
    with pytest.raises(ValueError, match="can share keys only with SubMConv3d"):
        SubMConv3d(2, 2, indice_key="d")(y)
    with pytest.raises(ValueError, match="not the output sites"):
        SparseInverseConv3d(2, 2, kernel_size=3, indice_key="d")(_with_pairs_of(y, x))


def test_empty_result_of_an_unpadded_strided_conv_is_reported():
    x = make_sparse_tensor(
        coords=_coords([[0, 7, 7, 7]]), features=torch.ones(1, 2), spatial_shape=(8, 8, 8), batch_size=1
    )
    y = SparseConv3d(2, 2, kernel_size=3, stride=2)(x)  # outputs cover input rows 0..6 only
    assert sparse_features(y).shape == (0, 2)
    with pytest.raises(ValueError, match="no active sites"):
        SparseConvTranspose3d(2, 2, kernel_size=2, stride=2)(y)


def _with_pairs_of(source, target):
    """`target` carrying `source`'s cached index pairs: the stale state the layers must refuse."""
    stale = replace_features(target, sparse_features(target))
    stale.indice_dict = dict(source.indice_dict)
    return stale


def test_stale_subm_pairs_with_equal_site_count_are_refused():
    """spconv itself only compares site counts; same count but different sites must not reuse pairs."""
    a = make_sparse_tensor(
        coords=_coords([[0, 1, 1, 1], [0, 1, 1, 2]]),
        features=torch.ones(2, 2),
        spatial_shape=(5, 5, 5),
        batch_size=1,
    )
    b = make_sparse_tensor(
        coords=_coords([[0, 1, 1, 1], [0, 3, 3, 3]]),
        features=torch.ones(2, 2),
        spatial_shape=(5, 5, 5),
        batch_size=1,
    )
    cached = SubMConv3d(2, 2, indice_key="s")(a)
    with pytest.raises(ValueError, match="stale pairs"):
        SubMConv3d(2, 2, indice_key="s")(_with_pairs_of(cached, b))


# ----------------------------------------------------------------------------- dependency handling


def test_cpu_runs_the_native_algorithm():
    api = backend.spconv_api()
    assert backend.conv_algorithm(torch.device("cpu")) == api.conv_algo.Native
    x = make_sparse_tensor(
        coords=_coords([[0, 1, 1, 1]]), features=torch.ones(1, 2), spatial_shape=(4, 4, 4), batch_size=1
    )
    y = SparseConv3d(2, 2, kernel_size=3, stride=2, padding=1, indice_key="d")(x)
    assert y.indice_dict["d"].algo == api.conv_algo.Native


def test_missing_spconv_raises_missing_dependency(monkeypatch):
    monkeypatch.setitem(sys.modules, "spconv", None)
    monkeypatch.setitem(sys.modules, "spconv.pytorch", None)
    backend.spconv_api.cache_clear()
    try:
        with pytest.raises(MissingDependencyError, match=r"spconv-cu120.*pip install"):
            make_sparse_tensor(
                coords=_coords([[0, 1, 1, 1]]),
                features=torch.ones(1, 2),
                spatial_shape=(4, 4, 4),
                batch_size=1,
            )
    finally:
        monkeypatch.undo()
        backend.spconv_api.cache_clear()
    assert backend.spconv_api().version.startswith("2.")


def test_import_is_lazy_and_spconv_noise_is_silenced():
    script = (
        "import sys\n"
        "import pointstn, pointstn.ops, pointstn.ops.sparse as sp, torch\n"
        "assert 'spconv' not in sys.modules, 'spconv imported eagerly'\n"
        "x = sp.make_sparse_tensor(coords=torch.tensor([[0, 1, 1, 1]], dtype=torch.int32),\n"
        "                          features=torch.ones(1, 2), spatial_shape=(4, 4, 4), batch_size=1)\n"
        "y = sp.SubMConv3d(2, 2)(x)\n"
        "assert 'spconv' in sys.modules\n"
        "print('ok', tuple(sp.sparse_features(y).shape))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok (1, 2)"
    assert "Warning" not in done.stderr and "is_fx_tracing" not in done.stderr, done.stderr


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.name)
def test_cuda_layer_matches_dense_reference(case):
    """The same layers on CUDA (spconv's default algorithm, float32) against the float64 CPU reference."""
    gen = seeded("cuda", case)
    shape = (8, 7, 9)
    result = run_case(
        case, random_coords(gen, shape, density=0.2), shape, gen, device="cuda", dtype=torch.float32
    )
    assert_case(result, expected_out_shape(case, shape), FLOAT32_RTOL_CUDA)
