"""The kd-tree backends of the CPU neighbour search: both rank exactly like a float64 brute force."""

import numpy as np
import pytest

from pointstn.ops import kdtree
from pointstn.ops.knn import _query_order, _tree_select

needs_pykdtree = pytest.mark.skipif(not kdtree.pykdtree_available(), reason="pykdtree not installed")


def _brute_force(ref: np.ndarray, queries: np.ndarray, K: int, norm: int) -> np.ndarray:
    diff = queries[:, None, :] - ref[None, :, :]
    dist = np.abs(diff).sum(-1) if norm == 1 else np.square(diff).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(ref.shape[0]), dist.shape), dist), axis=-1)
    return order[:, :K]


def _tied_cloud(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A lattice (many exactly tied distances) with duplicated rows, and queries on and off it."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(6.0)] * 3, indexing="ij"), -1).reshape(-1, 3) * 0.25
    ref = np.concatenate([grid, grid[rng.choice(len(grid), 40)]])[rng.permutation(len(grid) + 40)]
    queries = np.concatenate([grid[rng.choice(len(grid), 50)], rng.uniform(0, 1.25, (50, 3)),
                              grid[:30] + 0.125])
    return ref, queries


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize(("backend", "norm"), [("scipy", 1), ("scipy", 2), pytest.param("pykdtree", 2, marks=needs_pykdtree)])
def test_tree_selection_ranks_by_distance_then_index(backend, norm, K):
    ref, queries = _tied_cloud(seed=K + 10 * norm)
    tree = kdtree._PyKDTree(ref) if backend == "pykdtree" else kdtree._ScipyTree(ref, norm)
    chosen = _tree_select(tree, np.arange(len(ref)), queries, np.arange(len(queries)), K=K, workers=2)
    np.testing.assert_array_equal(chosen, _brute_force(ref, queries, K, norm))


@needs_pykdtree
def test_euclidean_trees_are_pykdtree_and_l1_trees_scipy(monkeypatch):
    points = np.random.default_rng(0).uniform(size=(100, 3))
    assert isinstance(kdtree.build_tree(points, norm=2), kdtree._PyKDTree)
    assert isinstance(kdtree.build_tree(points, norm=1), kdtree._ScipyTree)
    assert np.array_equal(_query_order(kdtree.build_tree(points, norm=2)), np.arange(100))
    monkeypatch.setenv(kdtree.KDTREE_ENV, "scipy")
    assert isinstance(kdtree.build_tree(points, norm=2), kdtree._ScipyTree)


@needs_pykdtree
def test_pykdtree_threads_follow_torch():
    """Each query sets the thread count of pykdtree's own OpenMP runtime (found, not silently skipped)."""
    openmp = kdtree.pykdtree_openmp()
    assert openmp is not None
    points = np.random.default_rng(1).uniform(size=(500, 3))
    tree = kdtree.build_tree(points, norm=2)
    for workers in (1, 2, 1):
        dist, idx = tree.query(points, k=1, workers=workers)
        assert openmp.omp_get_max_threads() == workers
        assert np.array_equal(idx[:, 0], np.arange(500)) and not dist.any()
