"""Appearance randomization: surface texture, material, lights and background of one render.

Everything is drawn from a ``np.random.Generator``; the same generator state gives the same
``Appearance`` and therefore (with the same mesh, pose and renderer) the same image. The point is
that a model cannot tell shapes apart by colour: every object gets a random texture (solid,
stripes, checker, noise, printed-label band; ``textures.py``) mapped with a random box or cylinder
UV projection (``surface.py``), random roughness/metalness, 1-3 random directional lights plus
ambient, and a random background (solid, gradient, noise) or the clutter-free "plain" one.

Lights are given in the OpenCV camera frame as the direction the light travels. They are drawn
within ``max_light_angle_deg`` of the optical axis (+z), i.e. from the camera's side of the object,
so the visible surface is lit; the angle spread gives strong shading variety.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointstn.data.render.surface import UV_PROJECTIONS
from pointstn.data.render.textures import (
    BACKGROUND_KINDS,
    TEXTURE_KINDS,
    make_background,
    make_texture,
)


@dataclass(frozen=True, eq=False)
class Light:
    """A directional light. direction: (3,) unit vector in the OpenCV camera frame, the direction
    the light travels; color: (3,) in [0, 1]; intensity: pyrender units (about 1-6 is typical)."""

    direction: np.ndarray
    color: np.ndarray
    intensity: float


@dataclass(frozen=True, eq=False)
class Appearance:
    """Everything about a render that is not geometry or camera.

    texture: (T, T, 3) uint8 tileable base-colour image.
    uv_projection: one of ``UV_PROJECTIONS``; texture_repeats: repeats across the longest edge.
    roughness, metallic: PBR material factors in [0, 1].
    lights: 1+ directional lights; ambient: (3,) ambient light colour in [0, 1].
    background: (H, W, 3) uint8, composited behind the object (must match the render size).
    """

    texture: np.ndarray
    uv_projection: str
    texture_repeats: float
    roughness: float
    metallic: float
    lights: tuple[Light, ...]
    ambient: np.ndarray
    background: np.ndarray

    def __post_init__(self) -> None:
        if self.texture.ndim != 3 or self.texture.shape[2] != 3 or self.texture.dtype != np.uint8:
            raise ValueError(f"texture must be (T, T, 3) uint8, got {self.texture.shape} {self.texture.dtype}")
        if self.background.ndim != 3 or self.background.shape[2] != 3 or self.background.dtype != np.uint8:
            raise ValueError(f"background must be (H, W, 3) uint8, got {self.background.shape} {self.background.dtype}")
        if self.uv_projection not in UV_PROJECTIONS:
            raise ValueError(f"unknown uv projection {self.uv_projection!r}; valid: {UV_PROJECTIONS}")
        if not self.lights:
            raise ValueError("an appearance needs at least one light")

    @staticmethod
    def plain(*, height: int, width: int, gray: int = 160, background: int = 255) -> Appearance:
        """A fixed, non-random appearance: uniform grey object, one head-on light, uniform background."""
        return Appearance(
            texture=np.full((4, 4, 3), gray, dtype=np.uint8),
            uv_projection="box",
            texture_repeats=1.0,
            roughness=0.7,
            metallic=0.0,
            lights=(
                Light(
                    direction=np.array([0.3, 0.4, 1.0]) / np.sqrt(1.25),
                    color=np.ones(3),
                    intensity=3.0,
                ),
            ),
            ambient=np.full(3, 0.3),
            background=np.full((height, width, 3), background, dtype=np.uint8),
        )


def _pick(rng: np.random.Generator, names: tuple[str, ...], weights: tuple[float, ...]) -> str:
    p = np.asarray(weights, dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


@dataclass(frozen=True)
class AppearanceSampler:
    """Distribution over appearances. Kinds and weights are parallel tuples; set
    ``background_kinds=("plain",)`` for clutter-free data."""

    texture_kinds: tuple[str, ...] = TEXTURE_KINDS
    texture_weights: tuple[float, ...] = (0.2, 0.2, 0.2, 0.2, 0.2)
    texture_size: int = 128
    repeats_range: tuple[float, float] = (1.0, 3.0)
    background_kinds: tuple[str, ...] = BACKGROUND_KINDS
    background_weights: tuple[float, ...] = (0.1, 0.3, 0.3, 0.3)
    plain_color: tuple[int, int, int] = (255, 255, 255)
    light_count_range: tuple[int, int] = (1, 3)
    max_light_angle_deg: float = 70.0
    intensity_range: tuple[float, float] = (1.5, 5.0)
    ambient_range: tuple[float, float] = (0.05, 0.4)
    roughness_range: tuple[float, float] = (0.3, 1.0)
    metallic_range: tuple[float, float] = (0.0, 0.3)

    def __post_init__(self) -> None:
        for kinds, weights, valid, name in (
            (self.texture_kinds, self.texture_weights, TEXTURE_KINDS, "texture"),
            (
                self.background_kinds,
                self.background_weights,
                BACKGROUND_KINDS,
                "background",
            ),
        ):
            unknown = sorted(set(kinds) - set(valid))
            if unknown:
                raise ValueError(f"unknown {name} kind(s) {unknown}; valid kinds are {valid}")
            if len(kinds) == 0 or len(kinds) != len(weights) or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(f"{name}_kinds {kinds} and {name}_weights {weights} must be parallel, non-empty, >= 0")
        if not 1 <= self.light_count_range[0] <= self.light_count_range[1]:
            raise ValueError(f"light_count_range must be 1 <= low <= high, got {self.light_count_range}")

    def sample(self, rng: np.random.Generator, *, height: int, width: int) -> Appearance:
        """Draw one appearance for an image of (height, width)."""
        texture = make_texture(
            _pick(rng, self.texture_kinds, self.texture_weights),
            rng,
            size=self.texture_size,
        )
        projection = UV_PROJECTIONS[int(rng.integers(len(UV_PROJECTIONS)))]
        lights = tuple(
            self._sample_light(rng)
            for _ in range(int(rng.integers(self.light_count_range[0], self.light_count_range[1] + 1)))
        )
        ambient = rng.uniform(*self.ambient_range) * (1.0 - 0.2 * rng.random(3))
        background = make_background(
            _pick(rng, self.background_kinds, self.background_weights),
            rng,
            height=height,
            width=width,
            plain_color=self.plain_color,
        )
        return Appearance(
            texture=texture,
            uv_projection=projection,
            texture_repeats=float(rng.uniform(*self.repeats_range)),
            roughness=float(rng.uniform(*self.roughness_range)),
            metallic=float(rng.uniform(*self.metallic_range)),
            lights=lights,
            ambient=ambient,
            background=background,
        )

    def _sample_light(self, rng: np.random.Generator) -> Light:
        polar = np.radians(rng.uniform(0.0, self.max_light_angle_deg))
        azimuth = rng.uniform(0.0, 2 * np.pi)
        direction = np.array(
            [
                np.sin(polar) * np.cos(azimuth),
                np.sin(polar) * np.sin(azimuth),
                np.cos(polar),
            ]
        )
        color = 1.0 - 0.25 * rng.random(3)  # a mild random tint
        return Light(
            direction=direction,
            color=color,
            intensity=float(rng.uniform(*self.intensity_range)),
        )
