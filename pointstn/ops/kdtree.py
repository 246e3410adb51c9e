"""The kd-trees behind the CPU nearest-neighbour search: one interface over scipy's `cKDTree` and
`pykdtree`, with exact float64 distances and an explicit thread count.

- Euclidean (norm 2): `pykdtree` when importable. On 8 clouds of 2048 points it builds and queries
  about twice as fast as `cKDTree` (docs/BENCHMARKS.md, chamfer suite). Its queries run on its own
  OpenMP runtime, whose thread count is set per query (`omp_set_num_threads` of the runtime the
  extension loaded), so a run limited to one thread stays on one core.
- L1 (norm 1), or without pykdtree: scipy's `cKDTree` (`p=1`), `workers` threads.
- The environment variable `POINTSTN_KDTREE=scipy` makes every search use `cKDTree` (the benchmark's
  `pointstn-kdtree-scipy` contender: the path before pykdtree, side by side).

Fork safety: GNU OpenMP cannot run a parallel region in a process forked after its parent ran one
(the child waits forever for the parent's worker threads, e.g. in a DataLoader worker). A process
forked after pykdtree ran a query therefore uses cKDTree (same results; `tests/ops/test_chamfer.py`).

Both return neighbours sorted by float64 distance; among exactly tied distances the order is the
tree's, which the caller re-ranks by index (`knn._tree_select`).
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import numpy as np


class _OpenMPState:
    used = False  # pykdtree ran a query in this process (its OpenMP threads exist)
    usable = True  # False in a child forked after that: its OpenMP runtime would hang


def _after_fork_in_child() -> None:
    if _OpenMPState.used:
        _OpenMPState.usable = False


os.register_at_fork(after_in_child=_after_fork_in_child)


class NeighbourTree:
    """A kd-tree over (M, D) float64 points. `query(points, k, workers)` -> (dist (Q, k), idx (Q, k));
    `leaf_order`: the tree's points in leaf order, (M,), when the tree exposes it (a cache-friendly
    order to query the *other* side in), else None."""

    n: int
    leaf_order: np.ndarray | None

    def query(self, points: np.ndarray, k: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class _ScipyTree(NeighbourTree):
    def __init__(self, points: np.ndarray, norm: int):
        from scipy.spatial import cKDTree

        self._tree = cKDTree(points, leafsize=32, balanced_tree=False, compact_nodes=False)
        self._norm = norm
        self.n = points.shape[0]
        self.leaf_order = self._tree.indices

    def query(self, points, k, workers):
        dist, idx = self._tree.query(points, k=k, p=self._norm, workers=workers)
        return dist.reshape(points.shape[0], k), idx.reshape(points.shape[0], k)


class _PyKDTree(NeighbourTree):
    def __init__(self, points: np.ndarray):
        from pykdtree.kdtree import KDTree

        self._tree = KDTree(np.ascontiguousarray(points, dtype=np.float64), leafsize=16)
        self.n = points.shape[0]
        self.leaf_order = None

    def query(self, points, k, workers):
        openmp = pykdtree_openmp()
        if openmp is not None:
            openmp.omp_set_num_threads(workers)
        _OpenMPState.used = True
        dist, idx = self._tree.query(np.ascontiguousarray(points, dtype=np.float64), k=k, sqr_dists=True)
        return dist.reshape(points.shape[0], k), idx.reshape(points.shape[0], k).astype(np.int64, copy=False)


@functools.cache
def pykdtree_available() -> bool:
    try:
        import pykdtree.kdtree  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def pykdtree_openmp() -> ctypes.CDLL | None:
    """The OpenMP runtime pykdtree's extension loaded (its wheel bundles one under `pykdtree.libs/`;
    a source build links the system's), or None when none is found."""
    import pykdtree.kdtree as extension

    maps = Path("/proc/self/maps")
    candidates = []
    if maps.exists():
        loaded = {line.split()[-1] for line in maps.read_text().splitlines() if "gomp" in line or "libomp" in line}
        bundled = Path(extension.__file__).resolve().parent.parent / "pykdtree.libs"
        candidates = sorted(loaded, key=lambda path: not path.startswith(str(bundled)))
    for path in candidates:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(library, "omp_set_num_threads"):
            return library
    return None


KDTREE_ENV = "POINTSTN_KDTREE"  # "scipy": always cKDTree


def build_tree(points: np.ndarray, *, norm: int) -> NeighbourTree:
    """A kd-tree over `points` for distances of `norm` (1 or 2); see the module docstring."""
    forced_scipy = os.environ.get(KDTREE_ENV, "").strip().lower() == "scipy"
    if norm == 2 and not forced_scipy and _OpenMPState.usable and pykdtree_available():
        return _PyKDTree(points)
    return _ScipyTree(points, norm)
