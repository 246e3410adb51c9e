"""Families assembled with booleans (manifold3d): mug, tool, L-bracket, T-bracket.

Ranges below are in centimetres; the meshes are in metres.
"""

from __future__ import annotations

import numpy as np

from pointstn.data.shapes import booleans
from pointstn.data.shapes.loft import revolve_profile
from pointstn.data.shapes.spec import ShapeSpec, build_spec, signed_volume
from pointstn.data.shapes.swept import elliptic_handle

MUG_SEGMENTS = 48  # vertices per ring of the mug body
HANDLE_SEGMENTS = 32  # vertices per ring of the tool handle
HOLE_SEGMENTS = 24  # vertices of a bracket's round hole

# A rotation (det +1) taking the z axis to the x axis: (x, y, z) -> (z, y, -x).
Z_TO_X = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])

EXTENT_RANGES = {
    "mug": ((0.085, 0.07, 0.075), (0.137, 0.10, 0.12)),
    "tool": ((0.154, 0.08, 0.023), (0.30, 0.16, 0.048)),
    "l_bracket": ((0.0375, 0.02, 0.03), (0.25, 0.08, 0.15)),
    "t_bracket": ((0.04, 0.02, 0.03), (0.20, 0.08, 0.15)),
}


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _solid(vertices: np.ndarray, faces: np.ndarray):
    return booleans.to_manifold(vertices=vertices, faces=faces)


def _revolved(profile: list[list[float]], segments: int):
    vertices, faces = revolve_profile(profile=np.array(profile), segments=segments)
    return vertices, faces


def mug(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """Mug: a straight cylindrical cup (outer radius 3.5-5 cm, height 7.5-12 cm, wall 0.3-0.6 cm,
    base 0.4-0.9 cm) with a C-shaped handle on the +x side: a tube of radius 0.4-0.7 cm (capped at
    0.6 x the path's smallest radius of curvature) along half an ellipse reaching 1.5-3 cm beyond the
    wall and spanning 45-65 % of the height, centred at 48-55 % of the height. Extents
    (2 r + reach + tube radius, 2 r, h), i.e. x 8.5-13.7 cm, y 7-10 cm, z 7.5-12 cm.

    Built as (outer cylinder U handle) minus the cavity, so the handle's ends, buried in the wall,
    never reach into the cavity. `volume_filled` is the volume of (outer cylinder U handle);
    `volume_capacity` is the cylindrical cavity up to the rim, exactly
    segments sin(2 pi / segments) / 2 * (r - wall)^2 * (h - base). Symmetry "mirror" (the xz-plane).
    """
    radius = _u(rng, 0.035, 0.05)
    height = _u(rng, 0.075, 0.12)
    wall = _u(rng, 0.003, 0.006)
    base = _u(rng, 0.004, 0.009)
    tube = _u(rng, 0.004, 0.007)
    reach = _u(rng, 0.015, 0.03)
    half_height = height * _u(rng, 0.45, 0.65) / 2.0
    centre_z = height * _u(rng, 0.48, 0.55)
    # The handle's flat ends sit at x = centre_x; this keeps them inside the outer cylinder.
    embed = 0.5 * wall + tube**2 / radius
    centre_x = radius - embed
    semi_x = reach + embed
    tube = min(tube, 0.6 * min(semi_x**2 / half_height, half_height**2 / semi_x))
    inner = radius - wall
    outer = _solid(*_revolved([[0.0, 0.0], [radius, 0.0], [radius, height], [0.0, height]], MUG_SEGMENTS))
    cavity = _solid(*_revolved([[0.0, base], [inner, base], [inner, 1.1 * height], [0.0, 1.1 * height]], MUG_SEGMENTS))
    handle = _solid(
        *elliptic_handle(centre_x=centre_x, centre_z=centre_z, reach=semi_x, half_height=half_height, radius=tube)
    )
    filled = booleans.union(outer, handle)
    vertices, faces = booleans.from_manifold(booleans.difference(filled, cavity))
    capacity_mesh = _revolved([[0.0, base], [inner, base], [inner, height], [0.0, height]], MUG_SEGMENTS)
    filled_vertices, filled_faces = booleans.from_manifold(filled)
    params = {
        "radius": radius,
        "height": height,
        "wall": wall,
        "base": base,
        "handle_radius": tube,
        "handle_reach": reach,
        "handle_half_height": half_height,
        "handle_centre_z": centre_z,
        "handle_centre_x": centre_x,
        "segments": MUG_SEGMENTS,
    }
    return build_spec(
        family=family,
        seed=seed,
        params=params,
        vertices=vertices,
        faces=faces,
        symmetry="mirror",
        volume_capacity=signed_volume(vertices=capacity_mesh[0], faces=capacity_mesh[1]),
        volume_filled=signed_volume(vertices=filled_vertices, faces=filled_faces),
    )


def tool(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """Hammer-like tool lying on a table: a cylindrical handle (radius 1-1.8 cm, length 15-28 cm, along
    +x from x = 0) whose end is buried 50-80 % deep in a box head (2-4 cm along x, 8-16 cm along y,
    0.3-1.2 cm thicker than the handle along z), the head shifted sideways (+y, a claw side) by
    30-80 % of its free play. The handle's prism is turned so that one facet is flush with the
    head's bottom face: the tool rests on the head and along the handle. Extents
    (length + exposed head, head width, head thickness), i.e. x 15.4-30 cm, y 8-16 cm, z 2.3-4.8 cm.

    Volume exactly c r^2 length + head box - c r^2 buried length, c = segments sin(2 pi / segments) / 2.
    Symmetry "none" (the sideways head and the flush handle break both mirror planes).
    """
    radius = _u(rng, 0.010, 0.018)
    length = _u(rng, 0.15, 0.28)
    head_x = _u(rng, 0.02, 0.04)
    head_y = _u(rng, 0.08, 0.16)
    head_z = 2.0 * radius + _u(rng, 0.003, 0.012)
    buried = head_x * _u(rng, 0.5, 0.8)
    shift = (head_y / 2.0 - radius - 0.005) * _u(rng, 0.3, 0.8)
    handle_vertices, handle_faces = _revolved(
        [[0.0, 0.0], [radius, 0.0], [radius, length], [0.0, length]], HANDLE_SEGMENTS
    )
    turn = np.pi / HANDLE_SEGMENTS  # half a segment: a facet, not a vertex, faces down
    spin = np.array([[np.cos(turn), -np.sin(turn), 0.0], [np.sin(turn), np.cos(turn), 0.0], [0.0, 0.0, 1.0]])
    handle_vertices = handle_vertices @ (Z_TO_X @ spin).T
    handle_vertices[:, 2] += radius * np.cos(turn) - head_z / 2.0
    handle = _solid(handle_vertices, handle_faces)
    x0 = length - buried
    head = booleans.box(
        lo=(x0, shift - head_y / 2.0, -head_z / 2.0), hi=(x0 + head_x, shift + head_y / 2.0, head_z / 2.0)
    )
    vertices, faces = booleans.from_manifold(booleans.union(handle, head))
    params = {
        "handle_radius": radius,
        "handle_length": length,
        "head_x": head_x,
        "head_y": head_y,
        "head_z": head_z,
        "buried": buried,
        "head_shift_y": shift,
        "segments": HANDLE_SEGMENTS,
    }
    return build_spec(family=family, seed=seed, params=params, vertices=vertices, faces=faces, symmetry="none")


def _extruded(outline: np.ndarray, width: float):
    """A counter-clockwise (x, z) outline (K, 2) extruded along y over [0, width] (a manifold).

    Built directly in float64 (manifold3d's CrossSection rounds coordinates to a fixed grid).
    """
    k = len(outline)
    front = np.stack([outline[:, 0], np.zeros(k), outline[:, 1]], axis=1)
    back = front + [0.0, width, 0.0]
    cap = booleans.triangulate(outline)
    i = np.arange(k)
    j = (i + 1) % k
    # A counter-clockwise (x, z) triangle faces -y (x cross z = -y): as is at y = 0, reversed at y = width.
    faces = np.concatenate(
        [cap, cap[:, ::-1] + k, np.stack([i, i + k, j + k], axis=1), np.stack([i, j + k, j], axis=1)]
    )
    return _solid(np.concatenate([front, back]), faces)


def l_bracket(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """L-bracket standing on its long leg: plate thickness 0.2-0.6 cm, width 2-8 cm (along y), upright
    leg 3-15 cm high, lying leg 125-200 % of that long (at most 25 cm), one round hole (radius up to
    30 % of the width and of each leg's free length, at most 0.6 cm) through each leg. Extents
    (lying leg, width, upright leg), i.e. x 3.75-25 cm, y 2-8 cm, z 3-15 cm.

    Volume exactly t w h + t w (l - t) - 2 c r^2 t, c = hole_segments sin(2 pi / hole_segments) / 2.
    Symmetry "mirror" (the legs differ in length, so only the plane y = w / 2 remains).
    """
    thick = _u(rng, 0.002, 0.006)
    width = _u(rng, 0.02, 0.08)
    upright = _u(rng, 0.03, 0.15)
    lying = min(upright * _u(rng, 1.25, 2.0), 0.25)
    hole = min(0.3 * width, 0.3 * (upright - thick), 0.3 * (lying - thick), 0.006) * _u(rng, 0.5, 1.0)
    outline = np.array([[0.0, 0.0], [lying, 0.0], [lying, thick], [thick, thick], [thick, upright], [0.0, upright]])
    body = _extruded(outline, width)
    across = thick + 0.01  # longer than the plate is thick: the holes go through
    holes = [
        booleans.cylinder(
            segments=HOLE_SEGMENTS,
            centre=(thick / 2.0, width / 2.0, thick + 0.6 * (upright - thick)),
            axis="x",
            radius=hole,
            length=across,
        ),
        booleans.cylinder(
            segments=HOLE_SEGMENTS,
            centre=(thick + 0.6 * (lying - thick), width / 2.0, thick / 2.0),
            axis="z",
            radius=hole,
            length=across,
        ),
    ]
    vertices, faces = booleans.from_manifold(booleans.difference(body, *holes))
    params = {
        "thickness": thick,
        "width": width,
        "upright": upright,
        "lying": lying,
        "hole_radius": hole,
        "hole_segments": HOLE_SEGMENTS,
    }
    return build_spec(family=family, seed=seed, params=params, vertices=vertices, faces=faces, symmetry="mirror")


def t_bracket(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """T-bracket standing as an inverted T: base plate 4-20 cm long (x), 0.2-0.8 cm thick, width 2-8 cm
    (y); a centred stem 0.2-0.8 cm thick, total height 3-15 cm; one round hole through the base on
    each side of the stem, at a quarter of the base length from its ends (radius up to 0.6 cm, kept
    clear of the stem, the ends and the sides). Extents (base length, width, height), i.e.
    x 4-20 cm, y 2-8 cm, z 3-15 cm.

    Volume exactly L t_b w + t_s (h - t_b) w - 2 c r^2 t_b. Symmetry "discrete" (mirrors in x = 0 and
    y = w / 2 make a 180-degree turn about the vertical axis).
    """
    length = _u(rng, 0.04, 0.20)
    base = _u(rng, 0.002, 0.008)
    width = _u(rng, 0.02, 0.08)
    stem = _u(rng, 0.002, 0.008)
    height = _u(rng, 0.03, 0.15)
    hole = min(0.3 * width, 0.3 * (length / 4.0 - stem / 2.0), 0.006) * _u(rng, 0.5, 1.0)
    half, s = length / 2.0, stem / 2.0
    outline = np.array(
        [[-half, 0.0], [half, 0.0], [half, base], [s, base], [s, height], [-s, height], [-s, base], [-half, base]]
    )
    body = _extruded(outline, width)
    holes = [
        booleans.cylinder(
            segments=HOLE_SEGMENTS,
            centre=(sign * length / 4.0, width / 2.0, base / 2.0),
            axis="z",
            radius=hole,
            length=base + 0.01,
        )
        for sign in (-1.0, 1.0)
    ]
    vertices, faces = booleans.from_manifold(booleans.difference(body, *holes))
    params = {
        "length": length,
        "base": base,
        "width": width,
        "stem": stem,
        "height": height,
        "hole_radius": hole,
        "hole_segments": HOLE_SEGMENTS,
    }
    return build_spec(family=family, seed=seed, params=params, vertices=vertices, faces=faces, symmetry="discrete")
