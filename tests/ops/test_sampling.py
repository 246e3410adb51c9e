"""farthest_point_sample and random_resample."""

import pytest
import torch

from pointstn.ops import sampling
from pointstn.ops.sampling import farthest_point_sample, random_resample
from tests.ops.reference import farthest_point_reference


def test_fps_matches_the_textbook_loop():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(4, 200, 3, generator=g, dtype=torch.float64)
    lengths = torch.tensor([200, 150, 64, 33])
    out = farthest_point_sample(points, lengths, K=32)
    assert out.points.shape == (4, 32, 3) and out.idx.shape == (4, 32)
    for b in range(4):
        want = farthest_point_reference(points[b, : lengths[b]].numpy(), 32)
        assert out.idx[b].tolist() == want
        torch.testing.assert_close(out.points[b], points[b, want])
    assert torch.equal(out.lengths, torch.full((4,), 32))


def test_fps_random_start_uses_the_start_and_stays_valid():
    g = torch.Generator().manual_seed(1)
    points = torch.rand(3, 50, 3, generator=g, dtype=torch.float64)
    lengths = torch.tensor([50, 20, 5])
    out = farthest_point_sample(points, lengths, K=5, random_start=True, generator=torch.Generator().manual_seed(2))
    for b in range(3):
        start = int(out.idx[b, 0])
        assert 0 <= start < lengths[b]
        assert out.idx[b].tolist() == farthest_point_reference(points[b, : lengths[b]].numpy(), 5, start=start)
    assert sorted(out.idx[2].tolist()) == [0, 1, 2, 3, 4]  # a 5-point cloud gives all of its points


def test_fps_short_clouds_are_padded_like_pytorch3d():
    points = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [5, 5, 5]], [[0.0, 0, 0], [2, 0, 0], [9, 9, 9]]])
    out = farthest_point_sample(points, torch.tensor([3, 2]), K=3)
    assert out.idx.tolist() == [[0, 2, 1], [0, 1, -1]]
    assert out.lengths.tolist() == [3, 2]
    assert torch.equal(out.points[1, 2], torch.zeros(3))


def test_fps_points_are_differentiable():
    points = torch.rand(2, 10, 3, dtype=torch.float64, requires_grad=True)
    out = farthest_point_sample(points, K=4)
    out.points.sum().backward()
    assert points.grad.sum().item() == pytest.approx(2 * 4 * 3)


def test_random_resample_without_replacement_when_enough_points():
    points = torch.arange(2 * 10 * 3, dtype=torch.float32).view(2, 10, 3)
    out = random_resample(points, torch.tensor([10, 8]), K=6, generator=torch.Generator().manual_seed(3))
    for b, n in enumerate([10, 8]):
        chosen = out.idx[b].tolist()
        assert len(set(chosen)) == 6 and max(chosen) < n
        torch.testing.assert_close(out.points[b], points[b, chosen])


def test_random_resample_with_replacement_only_for_short_clouds():
    points = torch.rand(2, 5, 3)
    out = random_resample(points, torch.tensor([5, 3]), K=7, generator=torch.Generator().manual_seed(4))
    assert sorted(set(out.idx[1].tolist())) == [0, 1, 2]  # every point at least once
    assert out.idx[1].bincount().sum() == 7
    assert sorted(set(out.idx[0].tolist())) == [0, 1, 2, 3, 4]
    assert out.lengths.tolist() == [7, 7]


def test_random_resample_is_reproducible_and_seed_dependent():
    points = torch.rand(3, 100, 3)
    a = random_resample(points, K=20, generator=torch.Generator().manual_seed(5))
    b = random_resample(points, K=20, generator=torch.Generator().manual_seed(5))
    c = random_resample(points, K=20, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.idx, b.idx) and not torch.equal(a.idx, c.idx)


def test_errors():
    with pytest.raises(ValueError, match="K must be"):
        farthest_point_sample(torch.rand(1, 4, 3), K=0)
    with pytest.raises(ValueError, match="clouds \\[1\\] are empty"):
        random_resample(torch.rand(2, 4, 3), torch.tensor([4, 0]), K=2)
    with pytest.raises(ValueError, match="too long"):
        farthest_point_sample(torch.rand(2, 4, 3), torch.tensor([5, 1]), K=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dims", [2, 3])
def test_fps_cpu_path_equals_the_batched_torch_loop_including_ties(dtype, dims):
    """The CPU path (numpy, one cloud at a time) picks exactly the indices of the batched torch loop that
    runs on other devices: lattices with duplicates (ties everywhere), ragged lengths, random starts."""
    g = torch.Generator().manual_seed(7)
    lattice = torch.stack(torch.meshgrid(*[torch.arange(6.0)] * dims, indexing="ij"), -1).reshape(-1, dims) * 0.1
    clouds = []
    for _ in range(3):
        rows = torch.cat([torch.randperm(len(lattice), generator=g), torch.randint(len(lattice), (20,), generator=g)])
        clouds.append(lattice[rows])
    clouds.append(torch.rand(len(clouds[0]), dims, generator=g))
    pts = torch.stack(clouds).to(dtype)
    full = len(clouds[0])
    lengths = torch.tensor([full, 40, 7, full])
    starts = torch.tensor([0, 5, 3, full - 1])
    want = sampling._fps_indices_torch(pts, lengths, starts, 60)
    got = sampling._fps_indices_numpy(pts.numpy(), lengths.tolist(), starts.tolist(), 60)
    for b, length in enumerate(lengths.tolist()):
        used = min(length, 60)
        assert got[b, :used].tolist() == want[b, :used].tolist()
