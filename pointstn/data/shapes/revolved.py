"""Bodies of revolution built from sampled (rho, z) profiles: bottle, cup, bowl, plate.

The cup, bowl and plate are open containers: the mesh is the solid material (walls with
thickness), `volume_capacity` is the interior up to the rim and `volume_filled` the solid bounded by
the outer surface and the rim plane. Each of the three is measured on its own revolved mesh; since
the material profile and the interior profile tile the outer profile exactly and the revolved
volume is linear in the profile (see `revolve_profile`), filled = material + capacity up to
rounding. Ranges below are in centimetres; the meshes are in metres. Symmetry "axial" throughout.
"""

from __future__ import annotations

import numpy as np

from pointstn.data.shapes.loft import revolve_profile
from pointstn.data.shapes.primitives import AZIMUTH_SEGMENTS
from pointstn.data.shapes.spec import ShapeSpec, build_spec, signed_volume

ARC_POINTS = 16  # chords per curved profile section

EXTENT_RANGES = {
    "bottle": ((0.05, 0.05, 0.12), (0.10, 0.10, 0.35)),
    "cup": ((0.05, 0.05, 0.06), (0.126, 0.126, 0.16)),
    "bowl": ((0.105, 0.105, 0.026), (0.292, 0.292, 0.124)),
    "plate": ((0.16, 0.16, 0.015), (0.30, 0.30, 0.035)),
}


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _volume_of_profile(profile: np.ndarray) -> float:
    vertices, faces = revolve_profile(profile=profile, segments=AZIMUTH_SEGMENTS)
    return signed_volume(vertices=vertices, faces=faces)


def _container(
    *, family: str, seed: int, params: dict, material: np.ndarray, interior: np.ndarray, outer: np.ndarray
) -> ShapeSpec:
    vertices, faces = revolve_profile(profile=material, segments=AZIMUTH_SEGMENTS)
    return build_spec(
        family=family,
        seed=seed,
        params=params,
        vertices=vertices,
        faces=faces,
        symmetry="axial",
        volume_capacity=_volume_of_profile(interior),
        volume_filled=_volume_of_profile(outer),
    )


def bottle(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """Closed bottle: body radius 2.5-5 cm and height 8-20 cm (bottom edge chamfered by 8 % of the
    radius), a cosine shoulder 60-150 % of the body radius high, neck radius 1-1.6 cm (at most 60 %
    of the body radius) and height 1.5-5 cm, a cap 0.1-0.3 cm wider than the neck and 1-2.5 cm high.
    Extents (2 r_body, 2 r_body, total height), i.e. x, y 5-10 cm, z 12-35 cm.

    Treated as a closed solid (a capped bottle): `volume_capacity` is None.
    """
    r_body = _u(rng, 0.025, 0.05)
    h_body = _u(rng, 0.08, 0.20)
    h_shoulder = r_body * _u(rng, 0.6, 1.5)
    r_neck = min(_u(rng, 0.010, 0.016), 0.6 * r_body)
    h_neck = _u(rng, 0.015, 0.05)
    r_cap = r_neck + _u(rng, 0.001, 0.003)
    h_cap = _u(rng, 0.01, 0.025)
    chamfer = 0.08 * r_body
    u = np.linspace(0.0, 1.0, ARC_POINTS + 1)[1:]
    shoulder = np.stack([r_neck + (r_body - r_neck) * (1.0 + np.cos(np.pi * u)) / 2.0, h_body + h_shoulder * u], axis=1)
    shoulder[-1, 0] = r_neck
    z_neck_top = h_body + h_shoulder + h_neck
    top = z_neck_top + h_cap
    profile = np.concatenate(
        [
            [[0.0, 0.0], [r_body - chamfer, 0.0], [r_body, chamfer], [r_body, h_body]],
            shoulder,
            [[r_neck, z_neck_top], [r_cap, z_neck_top], [r_cap, top], [0.0, top]],
        ]
    )
    vertices, faces = revolve_profile(profile=profile, segments=AZIMUTH_SEGMENTS)
    params = {
        "radius_body": r_body,
        "height_body": h_body,
        "height_shoulder": h_shoulder,
        "radius_neck": r_neck,
        "height_neck": h_neck,
        "radius_cap": r_cap,
        "height_cap": h_cap,
        "chamfer": chamfer,
        "arc_points": ARC_POINTS,
        "segments": AZIMUTH_SEGMENTS,
    }
    return build_spec(family=family, seed=seed, params=params, vertices=vertices, faces=faces, symmetry="axial")


def cup(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """Open cup / tumbler with straight, outward-sloping walls: outer bottom radius 2.5-4.5 cm, outer
    rim radius 100-140 % of it, height 6-16 cm, horizontal wall thickness 0.15-0.5 cm, base
    thickness 0.3-1.2 cm. Extents (2 r_rim, 2 r_rim, h), i.e. x, y 5-12.6 cm, z 6-16 cm.

    The interior is the frustum between the base (z = base) and the rim (z = h) whose radius is
    the outer radius minus the wall thickness at every height.
    """
    r0 = _u(rng, 0.025, 0.045)
    r1 = r0 * _u(rng, 1.0, 1.4)
    height = _u(rng, 0.06, 0.16)
    wall = _u(rng, 0.0015, 0.005)
    base = _u(rng, 0.003, 0.012)
    inner_bottom = r0 + (r1 - r0) * base / height - wall
    inner_rim = r1 - wall
    outer = np.array([[0.0, 0.0], [r0, 0.0], [r1, height], [0.0, height]])
    material = np.array([[0.0, 0.0], [r0, 0.0], [r1, height], [inner_rim, height], [inner_bottom, base], [0.0, base]])
    interior = np.array([[0.0, base], [inner_bottom, base], [inner_rim, height], [0.0, height]])
    params = {
        "radius_bottom": r0,
        "radius_rim": r1,
        "height": height,
        "wall": wall,
        "base": base,
        "segments": AZIMUTH_SEGMENTS,
    }
    return _container(family=family, seed=seed, params=params, material=material, interior=interior, outer=outer)


def bowl(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """Open bowl: the interior is the lower half of a spheroid with horizontal radius 5-14 cm and
    depth 45-80 % of it; the outer surface is the half-spheroid wall thickness 0.25-0.6 cm larger
    in both radii, standing on a foot ring of radius 30-50 % of the outer radius whose flat bottom
    lies 0.1-0.6 cm (plus one wall thickness) below the interior's lowest point. Extents
    (2 (a + wall), 2 (a + wall), depth + base), i.e. x, y 10.5-29.2 cm, z 2.6-12.4 cm.

    Both ellipses are sampled at `arc_points` + 1 equally spaced parameter angles, so the capacity
    (the interior up to the rim plane) is exactly
    segments sin(2 pi / segments) * a^2 * depth * sum_i sin(dpsi) (cos psi_i + cos psi_i+1) / 6.
    """
    a = _u(rng, 0.05, 0.14)
    depth = a * _u(rng, 0.45, 0.8)
    wall = _u(rng, 0.0025, 0.006)
    base = wall + _u(rng, 0.001, 0.006)
    a_out, d_out = a + wall, depth + wall
    r_foot = a_out * _u(rng, 0.3, 0.5)
    psi = np.linspace(0.0, np.pi / 2.0, ARC_POINTS + 1)
    inner = np.stack([a * np.cos(psi), -depth * np.sin(psi)], axis=1)  # rim -> bottom
    inner[-1, 0] = 0.0
    psi_foot = np.arccos(r_foot / a_out)
    psi_out = np.linspace(psi_foot, 0.0, ARC_POINTS + 1)
    outer_arc = np.stack([a_out * np.cos(psi_out), -d_out * np.sin(psi_out)], axis=1)  # foot -> rim
    bottom = -(depth + base)
    foot = np.array([[0.0, bottom], [r_foot, bottom]])
    outer = np.concatenate([foot, outer_arc, [[0.0, 0.0]]])
    material = np.concatenate([foot, outer_arc, inner])
    interior = np.concatenate([[[0.0, 0.0]], inner])
    params = {
        "radius": a,
        "depth": depth,
        "wall": wall,
        "base": base,
        "radius_foot": r_foot,
        "arc_points": ARC_POINTS,
        "segments": AZIMUTH_SEGMENTS,
    }
    return _container(family=family, seed=seed, params=params, material=material, interior=interior, outer=outer)


def plate(*, family: str, seed: int, rng: np.random.Generator) -> ShapeSpec:
    """Plate / shallow dish: rim radius 8-15 cm, height 1.5-3.5 cm, flat foot radius 55-75 % of the
    rim radius, flat well floor of radius 70-95 % of the foot radius at height = floor thickness
    0.3-0.6 cm, straight sloped walls with horizontal rim thickness 0.4-1 cm. Extents (2 R, 2 R, h),
    i.e. x, y 16-30 cm, z 1.5-3.5 cm.

    Treated as an open container: its capacity is the frustum between the well floor and the rim.
    """
    rim = _u(rng, 0.08, 0.15)
    height = _u(rng, 0.015, 0.035)
    r_foot = rim * _u(rng, 0.55, 0.75)
    r_well = r_foot * _u(rng, 0.7, 0.95)
    floor = _u(rng, 0.003, 0.006)
    rim_wall = _u(rng, 0.004, 0.010)
    outer = np.array([[0.0, 0.0], [r_foot, 0.0], [rim, height], [0.0, height]])
    material = np.array(
        [[0.0, 0.0], [r_foot, 0.0], [rim, height], [rim - rim_wall, height], [r_well, floor], [0.0, floor]]
    )
    interior = np.array([[0.0, floor], [r_well, floor], [rim - rim_wall, height], [0.0, height]])
    params = {
        "radius_rim": rim,
        "height": height,
        "radius_foot": r_foot,
        "radius_well": r_well,
        "floor": floor,
        "rim_wall": rim_wall,
        "segments": AZIMUTH_SEGMENTS,
    }
    return _container(family=family, seed=seed, params=params, material=material, interior=interior, outer=outer)
