"""Tests for the offscreen renderer, surface attributes and appearance randomization.

The geometric tests prove the OpenCV <-> OpenGL conversion: rendered depth must equal the analytic
camera-frame z of a ray/plane intersection at every pixel centre, and the mask must be the
silhouette of every sampled surface point.
"""

import subprocess
import sys

import numpy as np
import pytest
import trimesh

from pointstn.data.render import gl_platform
from pointstn.data.render.appearance import Appearance, AppearanceSampler
from pointstn.data.render.backend import Renderer
from pointstn.data.render.rig import Rig, project
from pointstn.data.render.surface import crease_normals, surface_attributes
from pointstn.data.render.textures import TEXTURE_KINDS, make_texture
from pointstn.errors import MissingDependencyError, PointstnError

SIZE = 128
DEPTH_TOL_M = 1e-4  # float32 depth from a 24-bit buffer over a ~0.5 m near/far span: ~1e-6 m seen
SURFACE_TOL_M = 1e-3  # depth vs exact face depth at the same pixel centre (limited by DEPTH_TOL_M, 1e-3 to be safe)
VERTEX_TOL_M = 4e-3  # a vertex vs depth at its rounded pixel: surface slope x up to 0.7 px


@pytest.fixture(scope="module")
def renderer():
    try:
        instance = Renderer(width=SIZE, height=SIZE)
    except PointstnError as error:
        pytest.skip(f"no OpenGL offscreen backend can be created here: {error}")
    yield instance
    instance.close()


def plain():
    return Appearance.plain(height=SIZE, width=SIZE)


def analytic_plane_depth(view, K, *, face_z, half_extent):
    """Per-pixel camera z of the ray through each pixel centre hitting the plane z_obj = face_z,
    and where that hit lies within |x|, |y| < half_extent. Returns (H, W) float64, (H, W) bool."""
    u, v = np.meshgrid(np.arange(SIZE), np.arange(SIZE))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3) @ np.linalg.inv(K).T  # z = 1
    normal = view.rotation[:, 2]
    on_plane = view.rotation @ [0.0, 0.0, face_z] + view.translation
    scale = (normal @ on_plane) / (rays @ normal)
    hits_obj = (rays * scale[:, None] - view.translation) @ view.rotation
    inside = (np.abs(hits_obj[:, 0]) < half_extent) & (np.abs(hits_obj[:, 1]) < half_extent) & (scale > 0)
    return scale.reshape(SIZE, SIZE), inside.reshape(SIZE, SIZE)


@pytest.mark.parametrize("elevation, roll", [(25.0, 20.0), (-35.0, -30.0)])
def test_depth_equals_analytic_camera_z_at_every_pixel_centre(renderer, elevation, roll):
    rig = Rig()
    K = rig.intrinsics()
    slab = trimesh.creation.box((0.4, 0.4, 0.01))
    view = rig.view(azimuth_deg=37.0, elevation_deg=elevation, roll_deg=roll)
    result = renderer.render(
        vertices=slab.vertices,
        faces=slab.faces,
        camera_from_object=view.matrix(),
        intrinsics=K,
        appearance=plain(),
    )
    assert result.rgb.shape == (SIZE, SIZE, 3) and result.rgb.dtype == np.uint8
    assert result.depth.shape == (SIZE, SIZE) and result.depth.dtype == np.float32
    assert result.mask.dtype == bool
    np.testing.assert_array_equal(result.mask, result.depth > 0)

    face_z = 0.005 if elevation > 0 else -0.005  # the face the camera sees
    depth, inside = analytic_plane_depth(view, K, face_z=face_z, half_extent=0.19)
    assert inside.sum() > 2000
    assert result.mask[inside].all()
    np.testing.assert_allclose(result.depth[inside], depth[inside], atol=DEPTH_TOL_M)
    # Far outside the slab nothing is drawn.
    _, well_outside = analytic_plane_depth(view, K, face_z=face_z, half_extent=0.22)
    assert not result.mask[~well_outside].any()
    # The check is sensitive to the half-pixel principal-point convention in u and in v.
    for axis in (0, 1):
        shifted = K.copy()
        shifted[axis, 2] += 0.5
        wrong, _ = analytic_plane_depth(view, shifted, face_z=face_z, half_extent=0.19)
        assert np.abs(result.depth[inside] - wrong[inside]).max() > 20 * DEPTH_TOL_M


def test_projected_sphere_vertices_land_in_the_mask_with_their_depth(renderer):
    rig = Rig()
    K = rig.intrinsics()
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.12)
    sphere.apply_transform(np.diag([1.5, 1.0, 1.0, 1.0]))  # an ellipsoid, so orientation matters
    view = rig.view(azimuth_deg=-20.0, elevation_deg=50.0, roll_deg=35.0)
    result = renderer.render(
        vertices=sphere.vertices,
        faces=sphere.faces,
        camera_from_object=view.matrix(),
        intrinsics=K,
        appearance=plain(),
    )
    points = view.to_camera(sphere.vertices)
    pixels = np.rint(project(points, K)).astype(int)
    assert pixels.min() >= 1 and pixels.max() <= SIZE - 2
    # Every vertex (visible or not) lies inside the silhouette, up to one pixel at the boundary.
    neighbourhood = np.zeros(len(points), dtype=bool)
    for du in (-1, 0, 1):
        for dv in (-1, 0, 1):
            neighbourhood |= result.mask[pixels[:, 1] + dv, pixels[:, 0] + du]
    assert neighbourhood.all()
    # Vertices facing the camera (convex: hence visible) have the rendered depth at their pixel.
    normals = sphere.vertex_normals @ view.rotation.T
    facing = np.einsum("nc,nc->n", -points, normals) / np.linalg.norm(points, axis=1) > 0.7
    assert facing.sum() > 60
    rendered = result.depth[pixels[facing, 1], pixels[facing, 0]]
    np.testing.assert_allclose(rendered, points[facing, 2], atol=VERTEX_TOL_M)
    # And the mask is not just everything: the background is empty.
    assert 0.05 < result.mask.mean() < 0.6


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_surface_samples_agree_with_mask_and_depth_at_scale(renderer, seed):
    """Label consistency for the dataset: 20k surface samples of a convex mesh at rig views."""
    rig = Rig()
    K = rig.intrinsics()
    rng = np.random.default_rng(seed)
    mesh = trimesh.creation.box((0.25, 0.12, 0.3)).subdivide().subdivide()
    view = rig.sample_view(rng)
    appearance = AppearanceSampler().sample(rng, height=SIZE, width=SIZE)
    result = renderer.render(
        vertices=mesh.vertices,
        faces=mesh.faces,
        camera_from_object=view.matrix(),
        intrinsics=K,
        appearance=appearance,
    )
    samples, face_index = trimesh.sample.sample_surface(mesh, 20_000, seed=seed)
    points = view.to_camera(samples)
    uv = project(points, K)
    # Every surface point (seen or hidden) lies within one pixel of the silhouette: one of the four
    # pixel centres around its sub-pixel position is in the mask.
    low = np.floor(uv).astype(int)
    near_mask = np.zeros(len(points), dtype=bool)
    for du in (0, 1):
        for dv in (0, 1):
            near_mask |= result.mask[low[:, 1] + dv, low[:, 0] + du]
    assert near_mask.mean() >= 0.999
    # Depth at each sample's nearest pixel vs the exact depth of its own (planar) face at that pixel centre.
    pixels = np.rint(uv).astype(int)
    rays = np.concatenate([pixels, np.ones((len(pixels), 1))], axis=1) @ np.linalg.inv(K).T
    normals = mesh.face_normals[face_index] @ view.rotation.T
    plane_depth = np.einsum("nc,nc->n", normals, points) / np.einsum("nc,nc->n", normals, rays)
    seen_by_depth = np.abs(result.depth[pixels[:, 1], pixels[:, 0]] - plane_depth) < SURFACE_TOL_M
    # Reference visibility of a convex mesh: a face is seen iff it faces the camera.
    cosine = np.einsum("nc,nc->n", normals, -points) / np.linalg.norm(points, axis=1)
    assert 0.2 < np.mean(cosine > 0) < 0.8
    facing, hidden = (
        cosine > 0.2,
        cosine < 0,
    )  # grazing faces project to sub-pixel bands: left out
    assert facing.sum() > 1000 and hidden.sum() > 1000
    # Misses are pixels on a box edge whose centre already sees the neighbouring face (~1%).
    assert seen_by_depth[facing].mean() >= 0.98
    assert result.mask[pixels[facing, 1], pixels[facing, 0]].mean() >= 0.98
    assert seen_by_depth[hidden].mean() <= 0.01


def test_same_seed_renders_identical_images_and_state_does_not_leak(renderer):
    rig = Rig()
    cylinder = trimesh.creation.cylinder(radius=0.07, height=0.22, sections=40)

    def draw(seed):
        rng = np.random.default_rng(seed)
        view = rig.sample_view(rng)
        appearance = AppearanceSampler().sample(rng, height=SIZE, width=SIZE)
        return renderer.render(
            vertices=cylinder.vertices,
            faces=cylinder.faces,
            camera_from_object=view.matrix(),
            intrinsics=rig.intrinsics(),
            appearance=appearance,
        )

    first = draw(4)
    for seed in range(10, 16):  # other lights / textures / backgrounds in between
        draw(seed)
    again = draw(4)
    np.testing.assert_array_equal(first.rgb, again.rgb)
    np.testing.assert_array_equal(first.depth, again.depth)
    assert not np.array_equal(first.rgb, draw(5).rgb)


def test_different_seeds_vary_object_colour_and_background(renderer):
    rig = Rig()
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    view = rig.view(azimuth_deg=0.0, elevation_deg=20.0)
    object_means, background_means = [], []
    for seed in range(24):
        appearance = AppearanceSampler().sample(np.random.default_rng(seed), height=SIZE, width=SIZE)
        result = renderer.render(
            vertices=sphere.vertices,
            faces=sphere.faces,
            camera_from_object=view.matrix(),
            intrinsics=rig.intrinsics(),
            appearance=appearance,
        )
        # Compositing: outside the mask the image is exactly the appearance's background.
        np.testing.assert_array_equal(result.rgb[~result.mask], appearance.background[~result.mask])
        object_means.append(result.rgb[result.mask].mean(axis=0))
        background_means.append(result.rgb[~result.mask].mean(axis=0))
    object_means, background_means = np.array(object_means), np.array(background_means)
    assert object_means.std(axis=0).min() > 15  # all three channels vary across seeds
    assert background_means.std(axis=0).min() > 15
    distances = np.linalg.norm(object_means[:, None] - object_means[None], axis=-1)
    assert distances[np.triu_indices(len(distances), 1)].min() > 0.5  # no two objects look alike


def test_plain_background_option_is_clutter_free(renderer):
    rig = Rig()
    box = trimesh.creation.box((0.1, 0.2, 0.15))
    sampler = AppearanceSampler(
        background_kinds=("plain",),
        background_weights=(1.0,),
        plain_color=(10, 200, 30),
    )
    for seed in range(3):
        result = renderer.render(
            vertices=box.vertices,
            faces=box.faces,
            camera_from_object=rig.sample_view(np.random.default_rng(seed)).matrix(),
            intrinsics=rig.intrinsics(),
            appearance=sampler.sample(np.random.default_rng(seed), height=SIZE, width=SIZE),
        )
        assert (~result.mask).sum() > 1000
        assert np.all(result.rgb[~result.mask] == [10, 200, 30])


def test_noise_textures_tile_seamlessly_and_all_kinds_have_structure():
    for seed in range(6):
        # Smooth noise: the step across the wrap is no larger than any step inside the image
        # (an unwrapped lattice gives a jump several times larger).
        image = make_texture("noise", np.random.default_rng(seed), size=64).astype(np.float64)
        for axis in (0, 1):
            steps = np.abs(np.diff(image, axis=axis)).mean(axis=(1 - axis, 2))
            wrap = np.abs(np.take(image, 0, axis=axis) - np.take(image, -1, axis=axis)).mean()
            assert wrap <= steps.max() + 1e-9, (seed, axis)
    for kind in TEXTURE_KINDS:
        images = [make_texture(kind, np.random.default_rng(seed), size=64) for seed in range(4)]
        assert all(image.shape == (64, 64, 3) and image.dtype == np.uint8 for image in images)
        if kind != "solid":
            assert min(image.astype(np.float64).std() for image in images) > 1.0, kind
        assert not np.array_equal(images[0], images[1]), kind


def reference_crease_normals(faces, face_cross, crease_deg):
    """Obviously-correct loop version of ``crease_normals``."""
    unit = face_cross / np.linalg.norm(face_cross, axis=1, keepdims=True)
    out = np.zeros((3 * len(faces), 3))
    for f in range(len(faces)):
        for k in range(3):
            total = np.zeros(3)
            for g in range(len(faces)):
                if faces[f, k] in faces[g] and unit[f] @ unit[g] >= np.cos(np.radians(crease_deg)):
                    total += face_cross[g]
            out[3 * f + k] = total / np.linalg.norm(total)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_crease_normals_match_a_loop_reference(seed):
    rng = np.random.default_rng(seed)
    sphere = trimesh.creation.icosphere(subdivisions=1, radius=0.1)
    box = trimesh.creation.box((0.1, 0.2, 0.3))
    mesh = trimesh.util.concatenate([sphere, box])
    vertices = mesh.vertices + rng.normal(scale=0.005, size=mesh.vertices.shape)
    faces = mesh.faces
    corners = vertices[faces]
    face_cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    for crease in (20.0, 35.0, 60.0):
        np.testing.assert_allclose(
            crease_normals(faces, face_cross, crease_deg=crease),
            reference_crease_normals(faces, face_cross, crease),
            atol=1e-12,
        )


@pytest.mark.parametrize("projection", ["box", "cylinder"])
def test_surface_attributes_unweld_shade_and_map(projection):
    mesh = trimesh.creation.cylinder(radius=0.05, height=0.2, sections=32)
    surface = surface_attributes(mesh.vertices, mesh.faces, projection=projection, repeats=2.0)
    corners = mesh.vertices[mesh.faces].reshape(-1, 3)
    np.testing.assert_array_equal(surface.positions, corners)
    np.testing.assert_allclose(np.linalg.norm(surface.normals, axis=1), 1.0, atol=1e-12)
    # Shading normals on the side are smooth (radial), on the caps flat (+-z): the crease angle.
    side = np.abs(surface.normals[:, 2]) < 0.5
    radial = corners[side, :2] / np.linalg.norm(corners[side, :2], axis=1, keepdims=True)
    assert np.einsum("nc,nc->n", surface.normals[side, :2], radial).min() > 0.999
    assert np.allclose(np.abs(surface.normals[~side, 2]), 1.0)
    uv = surface.uv.reshape(-1, 3, 2)
    if projection == "box":
        # Side triangles facing +-x map (y, z) / longest edge * repeats, caps map (x, y).
        face_axis = np.argmax(np.abs(mesh.face_normals), axis=1)
        on_x = face_axis == 0
        expected = mesh.vertices[mesh.faces[on_x]][..., [1, 2]] / 0.2 * 2.0
        np.testing.assert_allclose(uv[on_x], expected, atol=1e-12)
        assert on_x.any()
    else:
        # u in turns: a side triangle spans 1/32 of a turn, even across the u = 0/1 seam.
        around = round(2.0 * np.pi)
        turns_span = np.ptp(uv[..., 0], axis=1) / around
        side_faces = np.abs(mesh.face_normals[:, 2]) < 0.5
        np.testing.assert_allclose(turns_span[side_faces], 1 / 32, atol=1e-9)
        assert turns_span.max() <= 0.5
        np.testing.assert_allclose(uv[..., 1].min(), 0.0, atol=1e-12)  # v: bottom -> 0, top -> repeats
        np.testing.assert_allclose(uv[..., 1].max(), 2.0, atol=1e-12)


def test_bad_inputs_are_rejected_with_named_problems(renderer):
    box = trimesh.creation.box((0.1, 0.1, 0.1))
    good = {
        "vertices": box.vertices,
        "faces": box.faces,
        "intrinsics": Rig().intrinsics(),
        "appearance": plain(),
    }
    skewed = np.eye(4)
    skewed[:3, :3] = np.diag([1.0, 1.0, 2.0])
    skewed[2, 3] = 1.0
    with pytest.raises(ValueError, match="proper rotation"):
        renderer.render(camera_from_object=skewed, **good)
    behind = np.eye(4)
    behind[2, 3] = -1.0
    with pytest.raises(ValueError, match="behind the camera"):
        renderer.render(camera_from_object=behind, **good)
    with pytest.raises(ValueError, match="faces"):
        renderer.render(
            camera_from_object=Rig().view(azimuth_deg=0, elevation_deg=0).matrix(),
            **{**good, "faces": box.faces + 100},
        )
    with pytest.raises(ValueError, match="background"):
        renderer.render(
            camera_from_object=Rig().view(azimuth_deg=0, elevation_deg=0).matrix(),
            **{**good, "appearance": Appearance.plain(height=SIZE, width=SIZE + 1)},
        )


def test_no_backend_gives_one_line_error_naming_the_install(monkeypatch):
    monkeypatch.setattr(gl_platform, "_active_platform", None)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.delitem(sys.modules, "OpenGL", raising=False)  # as in a fresh process
    monkeypatch.setattr(gl_platform, "_library_available", lambda platform: False)
    with pytest.raises(MissingDependencyError) as caught:
        Renderer(width=8, height=8)
    message = str(caught.value)
    assert "\n" not in message and "apt-get install -y libosmesa6" in message and "egl" in message


def test_platform_choice_respects_the_user_and_refuses_to_switch(monkeypatch):
    monkeypatch.setattr(gl_platform, "_active_platform", None)
    monkeypatch.setenv("PYOPENGL_PLATFORM", "glx")
    with pytest.raises(PointstnError, match="PYOPENGL_PLATFORM='glx'"):
        gl_platform.select_platform("auto")
    monkeypatch.setenv("PYOPENGL_PLATFORM", "egl")
    assert gl_platform.select_platform("auto") == "egl"  # a user's setting wins over the osmesa default
    with pytest.raises(PointstnError, match="cannot switch to 'osmesa'"):
        gl_platform.select_platform("osmesa")
    monkeypatch.setattr(gl_platform, "_active_platform", None)
    monkeypatch.delenv("PYOPENGL_PLATFORM")
    monkeypatch.delitem(sys.modules, "OpenGL", raising=False)
    monkeypatch.setattr(gl_platform, "_library_available", lambda platform: platform == "egl")
    assert gl_platform.select_platform("auto") == "egl"  # osmesa missing -> falls back to egl
    assert gl_platform.os.environ["PYOPENGL_PLATFORM"] == "egl"


def test_context_creation_failure_is_one_line(monkeypatch):
    pyrender = pytest.importorskip("pyrender")

    def broken(**kwargs):
        raise RuntimeError("no display\nsecond line")

    monkeypatch.setattr(pyrender, "OffscreenRenderer", broken)
    with pytest.raises(PointstnError) as caught:
        Renderer(width=8, height=8)
    assert "\n" not in str(caught.value) and "no display second line" in str(caught.value)


def test_closed_renderer_refuses_and_importing_the_package_is_cheap():
    closed = Renderer(width=8, height=8)
    closed.close()
    closed.close()  # idempotent
    with pytest.raises(PointstnError, match="closed"):
        closed.render(
            vertices=np.zeros((3, 3)),
            faces=np.array([[0, 1, 2]]),
            camera_from_object=np.eye(4),
            intrinsics=np.eye(3),
            appearance=Appearance.plain(height=8, width=8),
        )
    code = "import sys, pointstn.data.render; print('pyrender' in sys.modules or 'OpenGL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_caches_follow_mesh_content_and_shaders_compile_once(renderer):
    rig = Rig()
    view = rig.view(azimuth_deg=15.0, elevation_deg=30.0)
    box = trimesh.creation.box((0.1, 0.1, 0.1))
    vertices = np.array(box.vertices)
    args = {
        "faces": box.faces,
        "camera_from_object": view.matrix(),
        "intrinsics": rig.intrinsics(),
        "appearance": plain(),
    }
    small = renderer.render(vertices=vertices, **args).mask.sum()
    vertices *= 2.0  # same array object, new content: the cached geometry must not be reused
    large = renderer.render(vertices=vertices, **args).mask.sum()
    assert large / small == pytest.approx(4.0, rel=0.1)
    # pyrender keys shaders on a per-call OSMesa context object; ours must not grow per render.
    program_cache = renderer._renderer._renderer._program_cache
    before = len(program_cache)
    for _ in range(5):
        renderer.render(vertices=vertices, **args)
    assert len(program_cache) == before <= 2
