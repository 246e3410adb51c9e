"""knn_points / knn_gather against the float64 reference in tests/ops/reference.py."""

import pytest
import torch

from pointstn.ops.knn import KNN, knn_gather, knn_points
from tests.ops.reference import knn_reference

TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-6}, torch.float64: {"rtol": 1e-10, "atol": 1e-12}}
BACKENDS = ["kdtree", "bruteforce"]


def _clouds(seed, N, P1, P2, D=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    p1 = torch.rand(N, P1, D, generator=g, dtype=torch.float64).to(dtype)
    p2 = torch.rand(N, P2, D, generator=g, dtype=torch.float64).to(dtype)
    return p1, p2


def _compare(p1, p2, lengths1, lengths2, *, K, norm, backend, check_idx=True):
    a1, a2 = p1.clone().requires_grad_(), p2.clone().requires_grad_()
    b1, b2 = p1.clone().requires_grad_(), p2.clone().requires_grad_()
    out = knn_points(a1, a2, lengths1, lengths2, norm=norm, K=K, return_nn=True, backend=backend)
    ref_d, ref_i, ref_nn = knn_reference(b1, b2, lengths1, lengths2, K=K, norm=norm)
    tol = TOL[p1.dtype]
    assert out.dists.shape == ref_d.shape and out.idx.shape == ref_i.shape and out.knn.shape == ref_nn.shape
    assert out.idx.dtype == torch.int64
    torch.testing.assert_close(out.dists, ref_d, **tol)
    torch.testing.assert_close(out.knn, ref_nn, **tol)
    if check_idx:
        assert torch.equal(out.idx, ref_i)
    g = torch.Generator().manual_seed(7)
    wd = torch.rand(out.dists.shape, generator=g, dtype=p1.dtype)
    wn = torch.rand(out.knn.shape, generator=g, dtype=p1.dtype)
    ((out.dists * wd).sum() + (out.knn * wn).sum()).backward()
    ((ref_d * wd).sum() + (ref_nn * wn).sum()).backward()
    torch.testing.assert_close(a1.grad, b1.grad, **tol)
    torch.testing.assert_close(a2.grad, b2.grad, **tol)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("K", [1, 3])
def test_full_clouds_match_reference(backend, dtype, norm, K):
    p1, p2 = _clouds(seed=K * 10 + norm, N=3, P1=57, P2=45, dtype=dtype)
    _compare(p1, p2, None, None, K=K, norm=norm, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("K", [1, 4])
def test_ragged_lengths_including_empty_and_short_clouds(backend, norm, K):
    p1, p2 = _clouds(seed=3, N=5, P1=30, P2=20)
    lengths1 = torch.tensor([30, 0, 17, 1, 9])
    lengths2 = torch.tensor([20, 5, 0, 2, 1])  # 2 and 1 are fewer than K=4: padded slots
    p1[1:, 25:] = float("nan")  # padding may hold garbage; it must not leak anywhere
    p2[:, 18:] = float("inf")
    p1[0, 25:] = torch.rand(5, 3, dtype=torch.float64)  # cloud 0 is full: keep it finite
    p2[0, 18:] = torch.rand(2, 3, dtype=torch.float64)
    out = _compare(p1, p2, lengths1, lengths2, K=K, norm=norm, backend=backend)
    assert torch.all(out.dists[1] == 0) and torch.all(out.idx[2] == 0)
    assert torch.all(out.dists[3, 1:] == 0)  # points past lengths1 are padded with 0
    if K == 4:
        assert torch.all(out.idx[3, 0, 2:] == 0) and torch.all(out.knn[4, :9, 1:] == 0)


@pytest.mark.parametrize("norm", [1, 2])
def test_length_one_clouds(norm):
    p1, p2 = _clouds(seed=5, N=4, P1=1, P2=1)
    for backend in BACKENDS:
        out = _compare(p1, p2, None, None, K=2, norm=norm, backend=backend)
        expected = (p1 - p2).pow(2).sum(-1) if norm == 2 else (p1 - p2).abs().sum(-1)
        torch.testing.assert_close(out.dists[:, :, 0], expected)


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("K", [1, 2, 5])
def test_exact_ties_go_to_the_smaller_index_on_kdtree(norm, K):
    """Integer lattice points with many duplicates: every distance tie is exact."""
    g = torch.Generator().manual_seed(11)
    p1 = torch.randint(0, 4, (3, 60, 3), generator=g).double() * 0.5
    p2 = torch.randint(0, 3, (3, 40, 3), generator=g).double() * 0.5  # 27 sites, 40 points: duplicates
    out = _compare(p1, p2, None, None, K=K, norm=norm, backend="kdtree")
    d0 = out.dists[..., 0]
    assert bool((d0 == 0).any())  # queries coincide with duplicated points: ties of 0 distance


def test_exact_ties_on_bruteforce():
    """Exact ties go to the smaller index where the arithmetic is exact (float64, integer points)."""
    g = torch.Generator().manual_seed(12)
    p1 = torch.randint(0, 4, (2, 50, 3), generator=g).double()
    p2 = torch.randint(0, 3, (2, 40, 3), generator=g).double()
    _compare(p1, p2, None, None, K=3, norm=1, backend="bruteforce")
    _compare(p1, p2, None, None, K=1, norm=2, backend="bruteforce")
    _compare(p1, p2, None, None, K=4, norm=2, backend="bruteforce")


def test_duplicate_points_gradient_goes_to_first_copy():
    p2 = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0]]], requires_grad=True)
    p1 = torch.tensor([[[0.9, 0, 0]]])
    for backend in BACKENDS:
        out = knn_points(p1, p2, K=1, backend=backend)
        assert out.idx.item() == 1
        (grad,) = torch.autograd.grad(out.dists.sum(), p2)
        torch.testing.assert_close(grad[0, :, 0], torch.tensor([0.0, 0.2, 0.0, 0.0]))


def test_same_result_with_one_and_two_threads():
    p1, p2 = _clouds(seed=21, N=4, P1=300, P2=280, dtype=torch.float32)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(knn_points(p1, p2, K=2))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0].idx, results[1].idx)
    assert torch.equal(results[0].dists, results[1].dists)


def test_returns_namedtuple_without_nn_by_default():
    p1, p2 = _clouds(seed=1, N=2, P1=4, P2=4)
    out = knn_points(p1, p2)
    assert isinstance(out, KNN) and out.knn is None and out.dists.shape == (2, 4, 1)


def test_knn_gather_masks_missing_neighbours():
    x = torch.arange(2 * 3 * 2, dtype=torch.float64).view(2, 3, 2).requires_grad_()
    idx = torch.tensor([[[2, 0]], [[1, 0]]])
    out = knn_gather(x, idx, lengths=torch.tensor([3, 1]))
    expected = torch.tensor([[[[4.0, 5.0], [0.0, 1.0]]], [[[8.0, 9.0], [0.0, 0.0]]]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([[[1.0, 1], [0, 0], [1, 1]], [[0, 0], [1, 1], [0, 0]]]).double())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"p2": torch.rand(3, 5, 3)}, "same batch dimension"),
        ({"p2": torch.rand(2, 5, 2)}, "same point dimension"),
        ({"norm": 3}, "1 or 2 norm"),
        ({"K": 0}, "K must be"),
        ({"lengths1": torch.tensor([5, 5])}, "too long"),
        ({"lengths2": torch.tensor([1])}, "shape"),
        ({"backend": "octree"}, "unknown kNN backend"),
    ],
)
def test_value_errors(kwargs, message):
    args = {"p1": torch.rand(2, 4, 3), "p2": torch.rand(2, 5, 3)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        knn_points(**args)


def test_nan_in_valid_points_is_rejected():
    p1 = torch.rand(2, 4, 3)
    p1[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="p1 contains NaN"):
        knn_points(p1, torch.rand(2, 5, 3))
    knn_points(p1, torch.rand(2, 5, 3), lengths1=torch.tensor([4, 2]))  # NaN only in padding: fine
