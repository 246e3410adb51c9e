"""Tests for pointstn.models.backbone.ResNetBackbone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pointstn.models.backbone import IMAGENET_MEAN, IMAGENET_STD, BasicBlock, ResNetBackbone

ATOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(batch: int, size: int, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=gen(seed), dtype=dtype)


def expected_parameter_count(*, in_channels: int, width: int, blocks: tuple[int, ...]) -> int:
    """Convs without bias, two affine parameters per norm channel."""
    count = 9 * in_channels * width + 2 * width  # stem
    previous = width
    for i, n in enumerate(blocks):
        channels = width * 2**i
        for j in range(n):
            c_in = previous if j == 0 else channels
            count += 9 * c_in * channels + 2 * channels + 9 * channels * channels + 2 * channels
            if c_in != channels:
                count += c_in * channels + 2 * channels
        previous = channels
    return count


@pytest.mark.parametrize("norm", ["group", "batch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [64, 128])
def test_shapes_dtypes_and_pooled(norm, dtype, size):
    torch.manual_seed(0)
    model = ResNetBackbone(width=8, blocks=(1, 1, 1, 1), norm=norm).to(dtype)
    assert model.out_channels == (8, 16, 32, 64) and model.out_strides == (2, 4, 8, 16)
    features = model(images(2, size, dtype=dtype))
    assert len(features.maps) == 4
    for feature_map, channels, stride in zip(features.maps, model.out_channels, model.out_strides):
        assert feature_map.shape == (2, channels, size // stride, size // stride) and feature_map.dtype == dtype
    assert features.pooled.shape == (2, 64) and features.pooled.dtype == dtype
    torch.testing.assert_close(features.pooled, features.maps[-1].mean(dim=(2, 3)), rtol=0, atol=ATOL[dtype])


def test_other_stage_counts_and_parameter_count():
    model = ResNetBackbone(width=6, blocks=(2, 1, 3))
    assert model.out_channels == (6, 12, 24) and model.out_strides == (2, 4, 8)
    features = model(images(1, 32))
    assert [tuple(m.shape) for m in features.maps] == [(1, 6, 16, 16), (1, 12, 8, 8), (1, 24, 4, 4)]
    for blocks, width in (((2, 1, 3), 6), ((1, 1, 1, 1), 32)):
        model = ResNetBackbone(width=width, blocks=blocks)
        got = sum(p.numel() for p in model.parameters())
        assert got == expected_parameter_count(in_channels=3, width=width, blocks=blocks)
    assert got == 1_226_400  # the default configuration (width 32, blocks (1, 1, 1, 1))


def test_input_normalization_uses_the_documented_constants():
    model = ResNetBackbone(width=4, blocks=(1, 1)).double()
    x = images(2, 8, dtype=torch.float64)
    seen = []
    model.stem[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    model(x)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], (x - mean) / std, rtol=0, atol=1e-15)


def test_initialisation_kaiming_and_zero_last_norm():
    torch.manual_seed(1)
    model = ResNetBackbone(width=32, blocks=(1, 1, 1, 1))
    conv = model.stages[3][1].conv2  # 256 -> 256, 3x3: 589,824 weights
    expected_std = (2.0 / (conv.out_channels * 9)) ** 0.5  # fan_out, ReLU gain
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.01
    assert abs(conv.weight.mean().item()) < 0.01 * expected_std
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 4
    for block in blocks:
        assert torch.count_nonzero(block.norm2.weight) == 0 and torch.count_nonzero(block.norm1.weight - 1) == 0
    # so an identity-shortcut block is the identity on its (non-negative, post-ReLU) input at init
    block = BasicBlock(in_channels=8, out_channels=8, norm="group")
    model_block = ResNetBackbone(width=8, blocks=(2,)).stages[0][1]
    x = torch.rand(2, 8, 6, 6, generator=gen(2))
    assert isinstance(model_block, BasicBlock) and torch.equal(model_block(x), x)
    assert not torch.equal(block(x), x)  # a plain BasicBlock (default init) is not: the check can fail


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_maps_are_pixel_aligned_with_grid_sample_convention(level):
    """Cell j of a stride-s map must be centred on input pixel s (j + 1/2) - 1/2 (pixel centres at integers).

    With every conv weight positive and uniform, BatchNorm in eval mode at its initial statistics and
    positive images, all ReLUs are active and the network is linear with mirror-symmetric kernels, so
    the input gradient of an interior cell is symmetric about the cell's centre: its centroid is the
    centre. (A stride-2 3x3 conv design would put it at s j instead.)
    """
    model = ResNetBackbone(width=4, blocks=(1, 1, 1, 1), norm="batch").double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
    size = 256
    x = torch.full((1, 3, size, size), 0.75, dtype=torch.float64, requires_grad=True)
    feature_map = model(x).maps[level]
    stride = model.out_strides[level]
    row, col = feature_map.shape[2] // 2, feature_map.shape[3] // 2 - 1
    feature_map[0, :, row, col].sum().backward()
    weight = x.grad[0].sum(0)
    assert (weight >= 0).all() and weight[0, :].abs().max() == 0  # receptive field inside the image
    coords = torch.arange(size, dtype=torch.float64)
    centroid_row = (weight.sum(1) * coords).sum() / weight.sum()
    centroid_col = (weight.sum(0) * coords).sum() / weight.sum()
    assert abs(centroid_row.item() - (stride * (row + 0.5) - 0.5)) < 1e-9
    assert abs(centroid_col.item() - (stride * (col + 0.5) - 0.5)) < 1e-9


def test_frozen_has_no_trainable_parameters_and_fixed_batchnorm_statistics():
    torch.manual_seed(3)
    model = ResNetBackbone(width=4, blocks=(1, 1), norm="batch", frozen=True)
    assert sum(p.requires_grad for p in model.parameters()) == 0
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():  # non-trivial statistics, so eval mode differs from batch statistics
        for bn in bns:
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    assert model.training and not any(bn.training for bn in bns)
    x = images(4, 16, seed=4)
    out_train = model(x)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    out_eval = model.eval()(x)
    torch.testing.assert_close(out_train.pooled, out_eval.pooled, rtol=0, atol=0)
    # the same network unfrozen does update its statistics and has trainable parameters
    unfrozen = ResNetBackbone(width=4, blocks=(1, 1), norm="batch")
    unfrozen.load_state_dict(before)
    unfrozen.train()(x)
    assert not torch.equal(unfrozen.state_dict()["stem.1.running_mean"], before["stem.1.running_mean"])
    assert all(p.requires_grad for p in unfrozen.parameters())


def test_group_norm_default_has_no_running_statistics_and_sane_groups():
    model = ResNetBackbone(width=24, blocks=(1, 1, 1))
    norms = [m for m in model.modules() if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d))]
    assert norms and all(isinstance(m, nn.GroupNorm) for m in norms)
    for m in norms:
        assert m.num_channels % m.num_groups == 0 and m.num_channels // m.num_groups >= 4 and m.num_groups <= 32
    assert {m.num_channels: m.num_groups for m in norms} == {24: 6, 48: 12, 96: 24}
    x = images(3, 16, seed=5)
    torch.testing.assert_close(model.train()(x).pooled, model.eval()(x).pooled, rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["group", "batch"])
@pytest.mark.parametrize("global_grid", [1, 4])
def test_inference_runs_channels_last_with_the_training_layouts_values(norm, global_grid):
    """Without autograd on CPU the maps come out channels-last (oneDNN's faster kernels); the values
    equal the default layout's (with autograd), and both equal a float64 run."""
    torch.manual_seed(0)
    model = ResNetBackbone(width=8, blocks=(1, 2, 1, 1), norm=norm, global_grid=global_grid).eval()
    for m in model.modules():  # non-trivial norms (the last norm of every branch starts at weight 0)
        if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
            nn.init.uniform_(m.weight, 0.5, 1.5), nn.init.uniform_(m.bias, -0.2, 0.2)
    x = images(3, 64, seed=4)
    with torch.no_grad():
        inference = model(x)
    trained = model(x)  # autograd on: the default layout
    reference = model.double()(x.double())
    assert all(m.is_contiguous(memory_format=torch.channels_last) for m in inference.maps)
    assert all(m.is_contiguous() for m in trained.maps)
    for got, want, ref in zip((*inference.maps, inference.pooled), (*trained.maps, trained.pooled),
                              (*reference.maps, reference.pooled)):
        torch.testing.assert_close(got, want.detach(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got.double(), ref.detach(), rtol=1e-4, atol=1e-5)


def test_gradients_reach_the_input():
    model = ResNetBackbone(width=4, blocks=(1, 1)).double()
    x = images(1, 8, dtype=torch.float64).requires_grad_(True)
    model(x).pooled.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.rand(3, 32, 32), r"\(B, 3, H, W\)"),
        (torch.rand(1, 4, 32, 32), r"\(B, 3, H, W\)"),
        (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), "floating point"),
        (torch.rand(0, 3, 32, 32), "empty batch"),
        (torch.rand(1, 3, 40, 32), "multiples of the total stride 16"),
        (torch.rand(1, 3, 8, 8), "multiples of the total stride 16"),
        (torch.rand(1, 3, 32, 32) * 255, "scaled to \\[0, 1\\]"),
        (torch.full((1, 3, 32, 32), float("nan")), "NaN or infinite"),
        (torch.full((1, 3, 32, 32), float("inf")), "NaN or infinite"),
    ],
)
def test_bad_images_raise_clear_errors(bad, message):
    model = ResNetBackbone(width=4)
    with pytest.raises(ValueError, match=message):
        model(bad)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        ResNetBackbone(norm="layer")
    with pytest.raises(ValueError, match="blocks must be a non-empty"):
        ResNetBackbone(blocks=())
    with pytest.raises(ValueError, match="blocks must be a non-empty"):
        ResNetBackbone(blocks=(1, 0))
    with pytest.raises(ValueError, match="width must be >= 1"):
        ResNetBackbone(width=0)


@pytest.mark.parametrize("grid", [2, 4])
def test_global_grid_pools_cells_of_the_last_map(grid):
    torch.manual_seed(0)
    model = ResNetBackbone(width=8, global_grid=grid).double()
    features = model(torch.rand(2, 3, 64, 64, dtype=torch.float64))
    last = features.maps[-1]  # (2, 64, 4, 4)
    cell = last.shape[-1] // grid
    expected = torch.stack([
        torch.stack([last[b, :, i * cell:(i + 1) * cell, j * cell:(j + 1) * cell].mean(dim=(1, 2))
                     for i in range(grid) for j in range(grid)], dim=1).reshape(-1)
        for b in range(2)
    ])
    assert model.global_channels == 64 * grid * grid == features.pooled.shape[1]
    torch.testing.assert_close(features.pooled, expected, rtol=0, atol=1e-12)


def test_global_grid_larger_than_the_last_map_is_a_clear_error():
    model = ResNetBackbone(width=4, global_grid=8)
    with pytest.raises(ValueError, match="smaller than global_grid 8"):
        model(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="global_grid must be a positive int"):
        ResNetBackbone(global_grid=0)
