"""Procedural, seeded families of graspable household / warehouse objects.

`generate_shape(family, seed)` returns a `ShapeSpec`: a watertight, outward-wound triangle mesh in
the canonical frame (origin at the bounding-box centre, +z up, metres; the object stands or lies as
it would rest on a table), its sampled parameters, its volumes and a symmetry tag. The same
(family, seed) gives byte-identical vertices and faces: a family draws every random number from
`numpy.random.default_rng(seed)` in a fixed order.

Families (each generator's docstring states its parameter ranges and resulting extents):
    box, can, cone, ball, fruit, torus          closed primitives        (primitives.py)
    bottle, cup, bowl, plate                    bodies of revolution     (revolved.py)
    banana                                      swept tube               (swept.py)
    mug, tool, l_bracket, t_bracket             booleans via manifold3d  (composite.py)
Open containers (cup, bowl, plate, mug) store `volume_capacity`; see `spec.py` for which volume is
the evaluation target.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pointstn.data.shapes import composite, primitives, revolved, swept
from pointstn.data.shapes.spec import SYMMETRIES, UNIQUE_ROTATION_SYMMETRIES, ShapeSpec
from pointstn.errors import PointstnError

FAMILIES: dict[str, Callable[..., ShapeSpec]] = {
    "box": primitives.box,
    "can": primitives.can,
    "cone": primitives.cone,
    "ball": primitives.ball,
    "fruit": primitives.fruit,
    "torus": primitives.torus,
    "bottle": revolved.bottle,
    "cup": revolved.cup,
    "bowl": revolved.bowl,
    "plate": revolved.plate,
    "banana": swept.banana,
    "mug": composite.mug,
    "tool": composite.tool,
    "l_bracket": composite.l_bracket,
    "t_bracket": composite.t_bracket,
}

# Documented bounding-box extents per family, metres: ((min x, min y, min z), (max x, max y, max z)).
EXTENT_RANGES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    **primitives.EXTENT_RANGES,
    **revolved.EXTENT_RANGES,
    **swept.EXTENT_RANGES,
    **composite.EXTENT_RANGES,
}


def generate_shape(family: str, seed: int) -> ShapeSpec:
    """Generate one object of `family` from `seed` (a non-negative integer); deterministic.

    Raises:
        PointstnError: for an unknown family (the message lists the valid ones) or a bad seed.
    """
    if family not in FAMILIES:
        raise PointstnError(f"unknown shape family {family!r}; choose one of: {', '.join(sorted(FAMILIES))}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PointstnError(f"shape seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    return FAMILIES[family](family=family, seed=int(seed), rng=rng)


__all__ = ["EXTENT_RANGES", "FAMILIES", "SYMMETRIES", "UNIQUE_ROTATION_SYMMETRIES", "ShapeSpec", "generate_shape"]
