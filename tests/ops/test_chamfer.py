"""chamfer_distance against the float64 PyTorch3D-semantics reference in tests/ops/reference.py."""

import itertools

import pytest
import torch

from pointstn.ops.chamfer import chamfer_distance
from tests.ops.reference import chamfer_reference

TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-6}, torch.float64: {"rtol": 1e-10, "atol": 1e-12}}
BACKENDS = ["kdtree", "bruteforce"]


def _inputs(seed, N=4, P1=23, P2=31, dtype=torch.float64, ragged=False, normals=False, weights=False):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64).to(dtype)
    args = {"x": r(N, P1, 3), "y": r(N, P2, 3)}
    if ragged:
        args["x_lengths"] = torch.tensor([P1, 1, P1 - 5, 7][:N])
        args["y_lengths"] = torch.tensor([P2 - 3, 1, P2, 1][:N])
    if normals:
        args["x_normals"] = r(N, P1, 3) - 0.5
        args["y_normals"] = r(N, P2, 3) - 0.5
    if weights:
        args["weights"] = r(N) + 0.1
    return args


def _flatten(value):
    if value is None:
        return []
    return list(value) if isinstance(value, tuple) else [value]


def _check(args, *, backend, **options):
    """Values and gradients of every differentiable input agree with the reference."""
    ours = {k: v.clone().requires_grad_(v.dtype.is_floating_point) for k, v in args.items()}
    refs = {k: v.clone().requires_grad_(v.dtype.is_floating_point) for k, v in args.items()}
    got = chamfer_distance(**ours, backend=backend, **options)
    want = chamfer_reference(**refs, **options)
    dtype = args["x"].dtype
    outputs, expected = [], []
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        assert isinstance(g, tuple) == isinstance(w, tuple)
        outputs += _flatten(g)
        expected += _flatten(w)
    for g, w in zip(outputs, expected):
        assert g.shape == w.shape and g.dtype == dtype
        torch.testing.assert_close(g, w, **TOL[dtype])
    gen = torch.Generator().manual_seed(3)
    scales = [torch.rand(w.shape, generator=gen, dtype=dtype) for w in expected]
    sum(((g * s).sum() for g, s in zip(outputs, scales))).backward()
    sum(((w * s).sum() for w, s in zip(expected, scales))).backward()
    for name, tensor in ours.items():
        if tensor.requires_grad and refs[name].grad is not None:
            assert tensor.grad is not None, name
            torch.testing.assert_close(tensor.grad, refs[name].grad, **TOL[dtype], msg=name)
    return got


REDUCTIONS = [("mean", "mean"), ("sum", "mean"), ("mean", "sum"), ("sum", "sum"), (None, "mean"),
              (None, "sum"), ("mean", "max"), (None, "max"), (None, None)]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_reduction, point_reduction", REDUCTIONS)
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("single_directional", [False, True])
def test_reductions_norms_directions(backend, batch_reduction, point_reduction, norm, single_directional):
    args = _inputs(seed=REDUCTIONS.index((batch_reduction, point_reduction)) * 2 + norm, ragged=True, weights=norm == 1)
    _check(args, backend=backend, batch_reduction=batch_reduction, point_reduction=point_reduction,
           norm=norm, single_directional=single_directional)  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("abs_cosine, ragged, weights", list(itertools.product([True, False], repeat=3)))
@pytest.mark.parametrize("batch_reduction, point_reduction", [("mean", "mean"), (None, "sum"), (None, None)])
def test_normals(backend, abs_cosine, ragged, weights, batch_reduction, point_reduction):
    args = _inputs(seed=5, normals=True, ragged=ragged, weights=weights)
    got = _check(args, backend=backend, abs_cosine=abs_cosine, batch_reduction=batch_reduction,
                 point_reduction=point_reduction)  # fmt: skip
    assert got[1] is not None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_defaults_full_clouds(backend, dtype):
    args = _inputs(seed=9, N=3, P1=200, P2=150, dtype=dtype)
    loss, normals = _check(args, backend=backend)
    assert loss.shape == () and normals is None


def test_length_one_clouds_and_identical_clouds():
    x = torch.rand(3, 1, 3, dtype=torch.float64)
    y = torch.rand(3, 1, 3, dtype=torch.float64)
    for backend in BACKENDS:
        loss, _ = chamfer_distance(x, y, batch_reduction=None, backend=backend)
        torch.testing.assert_close(loss, 2 * (x - y).pow(2).sum((1, 2)))
        same, _ = chamfer_distance(x, x.clone(), backend=backend)
        assert same.item() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm", [1, 2])
def test_duplicates_and_exact_ties(backend, norm):
    """Dyadic lattice points with many duplicates: exact ties must break like PyTorch3D's."""
    g = torch.Generator().manual_seed(17)
    args = {"x": torch.randint(0, 4, (3, 50, 3), generator=g).double() * 0.25,
                "y": torch.randint(0, 3, (3, 40, 3), generator=g).double() * 0.25}  # fmt: skip
    args["x_normals"] = torch.rand(3, 50, 3, generator=g, dtype=torch.float64) - 0.5
    args["y_normals"] = torch.rand(3, 40, 3, generator=g, dtype=torch.float64) - 0.5
    _check(args, backend=backend, norm=norm, point_reduction="sum")


def test_float32_matches_float64_reference_and_threads_agree():
    args = _inputs(seed=13, N=4, P1=500, P2=400, dtype=torch.float32)
    before = torch.get_num_threads()
    try:
        values = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            values.append(chamfer_distance(**args, batch_reduction=None)[0])
    finally:
        torch.set_num_threads(before)
    assert torch.equal(values[0], values[1])
    want, _ = chamfer_reference(**{k: v.double() for k, v in args.items()}, batch_reduction=None)
    torch.testing.assert_close(values[0].double(), want, rtol=1e-5, atol=0)


def test_backends_agree_and_auto_is_kdtree_on_cpu():
    args = _inputs(seed=14, N=2, P1=300, P2=300, dtype=torch.float32)
    auto, _ = chamfer_distance(**args, point_reduction=None, batch_reduction=None)
    tree, _ = chamfer_distance(**args, point_reduction=None, batch_reduction=None, backend="kdtree")
    brute, _ = chamfer_distance(**args, point_reduction=None, batch_reduction=None, backend="bruteforce")
    for a, b, c in zip(auto, tree, brute):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batch_reduction", ["mean", "sum", None])
def test_all_zero_weights(batch_reduction):
    args = _inputs(seed=15, N=3)
    x = args["x"].clone().requires_grad_()
    loss, normals = chamfer_distance(x, args["y"], weights=torch.zeros(3), batch_reduction=batch_reduction)
    assert torch.all(loss == 0) and torch.all(normals == 0)  # upstream returns zeros, not None
    assert loss.shape == (() if batch_reduction else (3,))
    loss.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_max_reduction_is_squared_hausdorff():
    x = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]])
    y = torch.tensor([[[0.0, 0, 0], [0.0, 3.0, 0]]])
    loss, _ = chamfer_distance(x, y, point_reduction="max")
    assert loss.item() == pytest.approx(9.0)  # y's (0, 3, 0) is 3 from x; x's farthest is 1 from y
    one_way, _ = chamfer_distance(x, y, point_reduction="max", single_directional=True)
    assert one_way.item() == pytest.approx(1.0)


def _bad(**overrides):
    args = {"x": torch.rand(2, 5, 3), "y": torch.rand(2, 6, 3)}
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "args, message",
    [
        (_bad(batch_reduction="max"), "batch_reduction must be one of"),
        (_bad(point_reduction="median"), "point_reduction must be one of"),
        (_bad(point_reduction=None), "Batch reduction must be None"),
        (_bad(norm=3), "1 or 2 norm"),
        (_bad(point_reduction="max", x_normals=torch.rand(2, 5, 3)), "Normals must be None"),
        (_bad(x=torch.rand(5, 3)), r"shape \(N, P, D\)"),
        (_bad(y=[[0.0, 0.0, 0.0]]), "Pointclouds objects or torch.Tensor"),
        (_bad(y=torch.rand(3, 6, 3)), "y does not have the correct shape"),
        (_bad(y=torch.rand(2, 6, 2)), "y does not have the correct shape"),
        (_bad(x_lengths=torch.tensor([5, 6])), "too long"),
        (_bad(y_lengths=torch.tensor([3])), r"shape \(N,\)"),
        (_bad(x_normals=torch.rand(2, 5)), "normals to be of shape"),
        (_bad(weights=torch.ones(3)), r"weights must be of shape \(N,\)"),
        (_bad(weights=torch.tensor([1.0, -1.0])), "weights cannot be negative"),
        (_bad(backend="faiss"), "unknown chamfer backend"),
    ],
)
def test_value_errors(args, message):
    with pytest.raises(ValueError, match=message):
        chamfer_distance(**args)


@pytest.mark.parametrize("which", ["x", "y"])
@pytest.mark.parametrize("bad, name", [(float("nan"), "NaN"), (float("inf"), "inf"), (float("-inf"), "inf")])
def test_nan_and_inf_are_named(which, bad, name):
    args = _bad()
    args[which][1, 2, 1] = bad
    with pytest.raises(ValueError, match=f"{which} contains {name}"):
        chamfer_distance(**args)


def test_garbage_in_padding_is_ignored():
    args = _inputs(seed=16, ragged=True, normals=True)
    for name, lengths in (("x", "x_lengths"), ("y", "y_lengths")):
        for n, length in enumerate(args[lengths]):
            args[name][n, length:] = float("nan")
            args[f"{name}_normals"][n, length:] = float("nan")
    _check(args, backend="kdtree", point_reduction="sum")


def test_pytorch3d_backend_needs_pytorch3d():
    try:
        import pytorch3d  # noqa: F401
    except ImportError:
        from pointstn.errors import MissingDependencyError

        with pytest.raises(MissingDependencyError, match="pytorch3d"):
            chamfer_distance(**_bad(), backend="pytorch3d")
    else:
        args = _inputs(seed=18, dtype=torch.float32)
        ours, _ = chamfer_distance(**args)
        theirs, _ = chamfer_distance(**args, backend="pytorch3d")
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def _chamfer_in_child(queue, x, y):
    torch.set_num_threads(2)
    queue.put(chamfer_distance(x, y)[0].item())


def test_works_in_a_forked_child_after_use_in_the_parent():
    """DataLoader workers fork: no state of the kdtree backend (threads, pools) may break the child."""
    import multiprocessing

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        args = _inputs(seed=19, N=2, P1=300, P2=300, dtype=torch.float32)
        parent, _ = chamfer_distance(args["x"], args["y"])
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_chamfer_in_child, args=(queue, args["x"], args["y"]))
        child.start()
        try:
            result = queue.get(timeout=60)
            child.join(timeout=60)
        finally:
            if child.is_alive():  # a hang is the failure this test guards against
                child.kill()
    finally:
        torch.set_num_threads(before)
    assert child.exitcode == 0 and result == parent.item()
