"""The global branch: a coarse canonical cloud from the image's pooled feature (PSGN-style)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CoarseHead(nn.Module):
    """MLP from the pooled image feature to `num_points` points in the normalized canonical frame.

    Outputs lie in [-0.5, 0.5]^3 (0.5 * tanh), the box every normalized object fits in, so the
    voxelizer never drops a coarse point. With decoder `none` this is the whole model's shape output
    (the `psgn` baseline).
    """

    def __init__(self, *, in_channels: int, num_points: int, hidden: int = 512):
        super().__init__()
        self.num_points = num_points
        self.mlp = nn.Sequential(
            nn.Linear(in_channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_points * 3),
        )
        # start from a small random blob (not a single point): Chamfer gradients need spread-out points
        nn.init.normal_(self.mlp[-1].weight, std=1e-3)
        with torch.no_grad():
            generator = torch.Generator().manual_seed(0)
            self.mlp[-1].bias.copy_((torch.rand(num_points * 3, generator=generator) - 0.5) * 1.2)

    def forward(self, pooled: Tensor) -> Tensor:
        """(B, C) -> (B, num_points, 3)."""
        return 0.5 * torch.tanh(self.mlp(pooled)).view(pooled.shape[0], self.num_points, 3)
