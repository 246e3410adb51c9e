"""Shared fixtures: a small random-weight model (dense decoder, no spconv needed), its checkpoint,
an analytic "oracle" rig model and synthetic sphere images with exactly known geometry."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def small_config(*overrides: str):
    from pointstn.config import ExperimentConfig, load_config

    # prune_threshold 0 keeps every voxel, so the fine (decoder) cloud exists even at random init
    return load_config(REPO / "configs" / "smoke.yaml", ExperimentConfig,
                       ["model.decoder.kind=dense", "data.image_size=64", "model.decoder.prune_threshold=0.0",
                        *overrides])


@pytest.fixture(scope="session")
def small_model():
    from pointstn.models.build import build_model

    config = small_config()
    torch.manual_seed(0)
    return build_model(config).eval(), config


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, small_model) -> Path:
    from pointstn.engine.checkpoint import save_checkpoint

    model, config = small_model
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    save_checkpoint(path, model=model, config=config, step=3)
    return path


def sphere_image(*, K: np.ndarray, size_hw: tuple[int, int], centre: np.ndarray, radius: float,
                 supersample: int = 3) -> np.ndarray:
    """(H, W, 3) uint8: a black sphere (exact silhouette: rays within asin(radius / |centre|) of the
    centre direction) on white, seen by a pinhole camera K; area-averaged over supersample^2 rays."""
    height, width = size_hw
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    u = (np.arange(width)[:, None] + offsets[None, :]).ravel()
    v = (np.arange(height)[:, None] + offsets[None, :]).ravel()
    uu, vv = np.meshgrid(u, v, indexing="xy")
    rays = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu)], axis=-1)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    direction = centre / np.linalg.norm(centre)
    inside = rays @ direction > math.cos(math.asin(radius / np.linalg.norm(centre)))
    coverage = inside.reshape(height, supersample, width, supersample).mean(axis=(1, 3))
    gray = np.rint(255.0 * (1.0 - coverage)).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


class SphereOracle(torch.nn.Module):
    """A perfect rig model for black spheres on white (the Reconstructor interface).

    From its S x S input it measures the silhouette's area A and centroid (u, v), and answers what the
    rig implies: radius rho with A = pi r^2, r = f rho / sqrt(d^2 - rho^2) (exact sphere silhouette),
    centre at distance d along the centroid's ray, identity rotation; the cloud is a sphere of
    diameter 1 in the normalized frame (longest edge 1, so scale = 2 rho).
    """

    def __init__(self, *, image_size: int, fov_y_deg: float = 30.0, distance_m: float = 1.0, num_points: int = 600):
        super().__init__()
        self.image_size = image_size
        self.focal = (image_size / 2) / math.tan(math.radians(fov_y_deg) / 2)
        self.distance = distance_m
        g = torch.Generator().manual_seed(0)
        sphere = torch.randn(num_points, 3, generator=g, dtype=torch.float64)
        self.register_buffer("sphere", 0.5 * sphere / sphere.norm(dim=1, keepdim=True))

    def forward(self, images: torch.Tensor):
        from pointstn.models.reconstructor import ReconstructionOutput
        from pointstn.models.types import SimilarityTransform

        coverage = (1.0 - images.double().mean(dim=1)).clamp(0, 1)  # (B, S, S) object fraction per pixel
        size = images.shape[-1]
        grid = torch.arange(size, dtype=torch.float64)
        area = coverage.sum(dim=(1, 2))
        u = (coverage * grid[None, None, :]).sum(dim=(1, 2)) / area
        v = (coverage * grid[None, :, None]).sum(dim=(1, 2)) / area
        r = torch.sqrt(area / math.pi)
        rho = r * self.distance / torch.sqrt(self.focal**2 + r**2)
        c = (size - 1) / 2
        ray = torch.stack([(u - c) / self.focal, (v - c) / self.focal, torch.ones_like(u)], dim=-1)
        translation = self.distance * ray / ray.norm(dim=-1, keepdim=True)
        batch = images.shape[0]
        transform = SimilarityTransform(torch.eye(3, dtype=torch.float64).expand(batch, 3, 3), 2 * rho, translation)
        points = self.sphere.expand(batch, -1, -1)
        return ReconstructionOutput(points=points, lengths=torch.full((batch,), points.shape[1]),
                                    points_camera=transform.apply(points), transform=transform, coarse=points,
                                    coarse_camera=transform.apply(points), levels=())
