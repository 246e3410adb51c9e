"""A small ResNet-style 2D CNN (written here: torchvision is not a dependency) giving multi-scale maps.

Layout for an input of S x S pixels, `width` w and `blocks` (n_0, ..., n_{L-1}):

    normalize (fixed constants, below)
    stem:    conv3x3(in -> w, stride 1) + norm + ReLU at full resolution, then 2x2 average pool
    stage 0: n_0 BasicBlocks, w channels                       -> map 0, stride 2
    stage i: 2x2 average pool, n_i BasicBlocks, w * 2**i ch.   -> map i, stride 2**(i+1)

so `out_strides = (2, 4, 8, 16)` and `out_channels = (w, 2w, 4w, 8w)` for four stages; at 128 px the
maps are 64, 32, 16 and 8 pixels wide, at 64 px 32, 16, 8 and 4.

Downsampling is "pool, then a stride-1 3x3 conv" instead of the usual stride-2 3x3 conv (same cost:
the conv runs at the pooled resolution). The reason is pixel alignment for the 3D sampler: a
stride-2 3x3 conv with padding 1 centres output cell i on input pixel 2i, so after four of them the
coarsest cell i is centred on input pixel 16 i, (16 - 1) / 2 = 7.5 px off the centre 16 i + 7.5 that
`grid_sample(..., align_corners=False)` assumes (half a cell). A 2x2 average pool centres cell i on
2 i + 0.5 exactly, and stride-1 convs keep centres, so every map is aligned with the convention
"cell i covers input pixels [s i, s (i + 1))" that the sampler's normalized coordinates use
(tests/models/test_backbone.py checks it). This needs H and W divisible by the total stride.

BasicBlock (He et al. 2016): conv3x3 + norm + ReLU + conv3x3 + norm, plus the input (identity, or
1x1 conv + norm when the channel count changes), then ReLU. Kaiming-normal init (fan_out, ReLU) for
convs; the last norm of every residual branch starts with weight 0 (Goyal et al. 2017), so each
block starts as its shortcut.

Normalization layer: `norm="group"` (GroupNorm, the default: the most groups <= 32 with >= 4 channels each) or
`norm="batch"` (BatchNorm2d). For 2-16 images per batch GroupNorm is the better choice: Wu & He
(2018, "Group Normalization", Fig. 1 / Table 2) report BatchNorm slightly better only at 32 images
per batch (ResNet-50 ImageNet error 23.6 vs 24.1), within about half a point at 16 and 8, and
clearly worse at 4 and 2 (27.3 and 34.7 vs about 24.1) as its batch statistics get noisy.
GroupNorm has no running statistics, so train and eval behave the same (no drift of the pose and
size read from `pooled` between training and inference).
On this CPU the two cost the same (batch 16, 128 px, width 32, blocks (1,1,1,1), 2 shared threads,
best of 10 over three runs: forward ~100 ms for either, forward+backward 275-330 ms for either).
BatchNorm remains available for large batches (and can be folded into the convs at inference).

Input normalization: images are RGB in [0, 1]; the backbone subtracts the ImageNet mean
(0.485, 0.456, 0.406) and divides by the ImageNet std (0.229, 0.224, 0.225) (fixed constants; any
fixed pair works since no pretrained weights are loaded, these are the field's convention). For
`in_channels != 3` the channel-averaged constants (0.449, 0.226) are used for every channel.

Memory layout: on CPU without autograd (inference, validation) the normalized images are converted
to channels-last, which the convolutions, norms and pools keep, so the maps come out channels-last
(the same values up to float rounding). Batch-16 inference of the default config went from 326 to
303 ms at 2 threads (docs/BENCHMARKS.md, "Allocator and channels-last inference"); at batch 1 the gain
is within this machine's noise. Training keeps the default layout, where channels-last made forward +
backward slower here.

`frozen=True`: every parameter has `requires_grad=False` and every norm layer stays in eval mode
even under `train()` (BatchNorm uses and keeps its running statistics; GroupNorm has none).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointstn.models.types import BackboneFeatures

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
NORMS: tuple[str, ...] = ("batch", "group")
# Accepted input range: [0, 1] nominally; values far outside (e.g. 0-255 images) are an error.
_INPUT_SLACK = 0.5


def _norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    # largest group count <= 32 that divides `channels` with >= 4 channels per group (at least 1 group)
    groups = max([g for g in range(1, 33) if channels % g == 0 and channels // g >= 4] or [1])
    return nn.GroupNorm(groups, channels)


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


class BasicBlock(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H, W): two 3x3 convs + shortcut (1x1 projection if C_in != C_out)."""

    def __init__(self, *, in_channels: int, out_channels: int, norm: str):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels)
        self.norm1 = _norm_layer(norm, out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.norm2 = _norm_layer(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False), _norm_layer(norm, out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetBackbone(nn.Module):
    """Images (B, in_channels, H, W) in [0, 1] -> BackboneFeatures (layout in the module docstring).

    Attributes:
        out_channels: channels of each map, finest first, `width * 2**i`.
        out_strides: input pixels per map cell, `2**(i + 1)`.
        global_channels: width of `pooled`, the global descriptor the localization net and the coarse
            head read: the last map average-pooled to `global_grid` x `global_grid` cells, flattened
            (C_last * global_grid**2). 1 is the global mean; a grid keeps the spatial layout (where
            the handle is, which way the top faces) that the pose needs, as the original STN's
            localization nets (conv + fully connected) do.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        width: int = 32,
        blocks: tuple[int, ...] = (1, 1, 1, 1),
        frozen: bool = False,
        norm: str = "group",
        global_grid: int = 1,
    ):
        super().__init__()
        blocks = tuple(int(n) for n in blocks)
        if in_channels < 1 or width < 1:
            raise ValueError(f"in_channels and width must be >= 1; got in_channels={in_channels}, width={width}")
        if not blocks or any(n < 1 for n in blocks):
            raise ValueError(f"blocks must be a non-empty tuple of block counts >= 1; got {blocks}")
        if not isinstance(global_grid, int) or global_grid < 1:
            raise ValueError(f"global_grid must be a positive int; got {global_grid!r}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid choices are {list(NORMS)}")
        self.in_channels = in_channels
        self.out_channels: tuple[int, ...] = tuple(width * 2**i for i in range(len(blocks)))
        self.out_strides: tuple[int, ...] = tuple(2 ** (i + 1) for i in range(len(blocks)))
        self.global_grid = global_grid
        self.global_channels = self.out_channels[-1] * global_grid**2
        self.frozen = frozen

        if in_channels == 3:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            mean = (sum(IMAGENET_MEAN) / 3,) * in_channels
            std = (sum(IMAGENET_STD) / 3,) * in_channels
        # float64 constants, cast to the images' dtype in forward
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float64).view(1, in_channels, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float64).view(1, in_channels, 1, 1), persistent=False)

        self.stem = nn.Sequential(
            _conv3x3(in_channels, width), _norm_layer(norm, width), nn.ReLU(inplace=True), nn.AvgPool2d(2)
        )
        stages = []
        previous = width
        for i, (count, channels) in enumerate(zip(blocks, self.out_channels)):
            layers: list[nn.Module] = [nn.AvgPool2d(2)] if i > 0 else []
            for j in range(count):
                layers.append(
                    BasicBlock(in_channels=previous if j == 0 else channels, out_channels=channels, norm=norm)
                )
            previous = channels
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self._init_weights()
        if frozen:
            for p in self.parameters():
                p.requires_grad_(False)
            self.train(self.training)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.norm2.weight)

    def train(self, mode: bool = True) -> ResNetBackbone:
        """As nn.Module.train, but a frozen backbone keeps every norm layer in eval mode."""
        super().train(mode)
        if self.frozen:
            for m in self.modules():
                if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                    m.eval()
        return self

    def forward(self, images: Tensor) -> BackboneFeatures:
        """images (B, in_channels, H, W) float in [0, 1], H and W multiples of out_strides[-1].

        Raises ValueError on a wrong shape or dtype, an empty batch, NaN/inf, a size that is not a
        multiple of the total stride, or values outside [-0.5, 1.5] (e.g. unscaled 0-255 images).
        """
        self._check_images(images)
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        if x.device.type == "cpu" and not torch.is_grad_enabled():
            # inference: oneDNN's channels-last kernels are faster on CPU (module docstring)
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        if self.global_grid == 1:
            return BackboneFeatures(maps=tuple(maps), pooled=x.mean(dim=(2, 3)))
        if min(x.shape[-2:]) < self.global_grid:
            raise ValueError(
                f"the last map is {x.shape[-2]} x {x.shape[-1]}, smaller than global_grid {self.global_grid}; "
                "use larger images or a smaller global_grid"
            )
        return BackboneFeatures(maps=tuple(maps), pooled=F.adaptive_avg_pool2d(x, self.global_grid).flatten(1))

    def _check_images(self, images: Tensor) -> None:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor; got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"images must be (B, {self.in_channels}, H, W); got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point in [0, 1]; got dtype {images.dtype}")
        if images.shape[0] == 0:
            raise ValueError("images is an empty batch (B = 0)")
        stride = self.out_strides[-1]
        height, width = images.shape[-2:]
        if height < stride or width < stride or height % stride or width % stride:
            raise ValueError(
                f"image height and width must be positive multiples of the total stride {stride} "
                f"(so every map cell covers whole pixels); got {height} x {width}"
            )
        if not bool(torch.isfinite(images).all()):
            raise ValueError("images contain NaN or infinite values")
        low, high = float(images.detach().min()), float(images.detach().max())
        if low < -_INPUT_SLACK or high > 1.0 + _INPUT_SLACK:
            raise ValueError(
                f"images must be scaled to [0, 1]; got values in [{low:.3g}, {high:.3g}] (0-255 images need / 255)"
            )
