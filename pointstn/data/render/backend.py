"""Offscreen renderer: a small interface with one pyrender implementation.

Platform: chosen once per process by ``gl_platform.select_platform`` (osmesa -> egl, respecting a
user-set ``PYOPENGL_PLATFORM``) before pyrender is imported.

Frames. Poses and intrinsics are OpenCV (x right, y down, z forward; pixel centres at integer
coordinates). OpenGL cameras look down -z with y up: the geometry is transformed into the OpenCV
camera frame in numpy, then into the OpenGL camera frame with ``diag(1, -1, -1)`` (a proper
rotation, so triangle winding is kept), and the pyrender camera sits at the origin. pyrender's
``cx, cy`` are measured from the image edge, hence the +0.5 on OpenCV's principal point.

Outputs. ``depth`` is the camera-frame z (metres) of the nearest surface at each pixel centre,
0 where empty; ``mask = depth > 0`` (object only); ``rgb`` is the object colour composited over the
appearance's background. On EGL pyrender renders into a 4x multisampled framebuffer and the
coverage (alpha) is used for compositing, so edges are anti-aliased while the mask stays binary; on
OSMesa pyrender reads the default buffer (RGB only, no multisampling) and the mask is the alpha.
Triangles are drawn two-sided (a reversed copy with flipped normals), so open or inconsistently
wound meshes shade correctly on both sides.

Caching: the shading geometry of the last mesh is kept (keyed on a hash of its vertex and face
bytes), so rendering one object from several views computes normals once; pyrender's shader cache
is replaced by one that does not key on the OSMesa context object (see ``_ContextFreeProgramCache``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Self

import numpy as np

from pointstn.data.render.appearance import Appearance
from pointstn.data.render.gl_platform import INSTALL_HINT, import_pyrender, select_platform
from pointstn.data.render.surface import (
    ShadingGeometry,
    shading_geometry,
    texture_coordinates,
)
from pointstn.errors import PointstnError

MAX_LIGHTS = 4
# OpenCV camera frame -> OpenGL camera frame (a proper rotation: 180 degrees about x).
_OPENGL_FROM_CAMERA = np.diag([1.0, -1.0, -1.0])
_ROTATION_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class RenderResult:
    """rgb: (H, W, 3) uint8; mask: (H, W) bool; depth: (H, W) float32 metres, 0 where empty."""

    rgb: np.ndarray
    mask: np.ndarray
    depth: np.ndarray


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: " + " ".join(str(error).split())


def _light_pose(direction_cam: np.ndarray) -> np.ndarray:
    """(4, 4) node pose whose -z axis is the light's travel direction, in the OpenGL camera frame."""
    travel = _OPENGL_FROM_CAMERA @ (np.asarray(direction_cam, dtype=np.float64) / np.linalg.norm(direction_cam))
    z_axis = -travel
    helper = np.array([1.0, 0.0, 0.0]) if abs(z_axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x_axis = np.cross(helper, z_axis)
    x_axis /= np.linalg.norm(x_axis)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x_axis, np.cross(z_axis, x_axis), z_axis], axis=1)
    return pose


def _reversed_corners(corners: np.ndarray) -> np.ndarray:
    """(3F, C) per-corner values -> the same with each triangle's corner order reversed."""
    return corners.reshape(-1, 3, corners.shape[1])[:, ::-1].reshape(-1, corners.shape[1])


def _check_pose(camera_from_object: np.ndarray) -> np.ndarray:
    pose = np.asarray(camera_from_object, dtype=np.float64)
    if pose.shape != (4, 4) or not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"camera_from_object must be a (4, 4) rigid transform, got shape {pose.shape}")
    rotation = pose[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=_ROTATION_TOLERANCE) or np.linalg.det(rotation) <= 0:
        raise ValueError("camera_from_object[:3, :3] must be a proper rotation (orthonormal, det +1)")
    return pose


def _check_intrinsics(intrinsics: np.ndarray) -> np.ndarray:
    K = np.asarray(intrinsics, dtype=np.float64)
    if K.shape != (3, 3) or K[0, 1] != 0 or not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0:
        raise ValueError(f"intrinsics must be a (3, 3) pinhole K without skew, got\n{K}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"intrinsics focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
    return K


class _ContextFreeProgramCache:
    """Shader-program cache keyed on shader files and defines only.

    pyrender's ``ShaderProgramCache`` adds ``OpenGL.contextdata.getContext()`` to its key; on OSMesa
    that returns a new pointer object on every call, so every render recompiled the shaders (~15 ms)
    and the cache grew without bound. A ``Renderer`` owns exactly one context, so the context is not
    needed in the key. Misses are delegated to pyrender's cache, which still owns (and frees) them.
    """

    def __init__(self, inner: object):
        self._inner = inner
        self._programs: dict[tuple, object] = {}

    def get_program(self, vertex_shader, fragment_shader, geometry_shader=None, defines=None):
        key = (
            vertex_shader,
            fragment_shader,
            geometry_shader,
            tuple(sorted((defines or {}).items())),
        )
        if key not in self._programs:
            self._programs[key] = self._inner.get_program(
                vertex_shader,
                fragment_shader,
                geometry_shader=geometry_shader,
                defines=defines,
            )
        return self._programs[key]

    def clear(self) -> None:
        self._programs.clear()
        self._inner.clear()

    def __len__(self) -> int:
        return len(self._programs)


class Renderer:
    """Renders one mesh at a time into (height, width) images, reusing one OpenGL context and scene.

    Use as a context manager or call ``close()``; a closed renderer refuses to render.
    """

    def __init__(self, *, width: int, height: int, backend: str = "auto"):
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got width={width}, height={height}")
        self.width, self.height = int(width), int(height)
        self.platform = select_platform(backend)
        pyrender = import_pyrender()
        self._pyrender = pyrender
        try:
            self._renderer = pyrender.OffscreenRenderer(viewport_width=self.width, viewport_height=self.height)
        except Exception as error:  # the GL stack reports many exception types; name the cause
            raise PointstnError(
                f"could not create an OpenGL context with PYOPENGL_PLATFORM={self.platform} "
                f"({_one_line(error)}); install: {INSTALL_HINT}"
            ) from error
        gl_renderer = self._renderer._renderer  # pyrender.Renderer behind the OffscreenRenderer
        gl_renderer._program_cache = _ContextFreeProgramCache(gl_renderer._program_cache)
        self._scene = pyrender.Scene(bg_color=np.zeros(4), ambient_light=np.zeros(3))
        self._camera = pyrender.IntrinsicsCamera(fx=1.0, fy=1.0, cx=0.0, cy=0.0, znear=0.01, zfar=100.0)
        self._scene.add(self._camera, pose=np.eye(4))
        self._lights = [pyrender.DirectionalLight(color=np.ones(3), intensity=0.0) for _ in range(MAX_LIGHTS)]
        self._light_nodes = [self._scene.add(light, pose=np.eye(4)) for light in self._lights]
        self._mesh_node = None
        self._geometry_cache: tuple[bytes, ShadingGeometry] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the OpenGL context (idempotent)."""
        if getattr(self, "_renderer", None) is not None:
            self._renderer.delete()
            self._renderer = None

    def render(
        self,
        *,
        vertices: np.ndarray,
        faces: np.ndarray,
        camera_from_object: np.ndarray,
        intrinsics: np.ndarray,
        appearance: Appearance,
    ) -> RenderResult:
        """Render a mesh (V, 3) metres / (F, 3) int, posed by camera_from_object (4, 4) OpenCV, with K (3, 3)."""
        if self._renderer is None:
            raise PointstnError("this Renderer is closed")
        pose, K = _check_pose(camera_from_object), _check_intrinsics(intrinsics)
        if appearance.background.shape != (self.height, self.width, 3):
            raise ValueError(
                f"appearance.background has shape {appearance.background.shape}, "
                f"expected {(self.height, self.width, 3)}"
            )
        if len(appearance.lights) > MAX_LIGHTS:
            raise ValueError(f"at most {MAX_LIGHTS} lights are supported, got {len(appearance.lights)}")

        geometry = self._shading_geometry(vertices, faces)
        uv = texture_coordinates(
            geometry,
            projection=appearance.uv_projection,
            repeats=appearance.texture_repeats,
        )
        rotation, translation = pose[:3, :3], pose[:3, 3]
        positions = geometry.corners.reshape(-1, 3) @ rotation.T + translation  # (3F, 3) OpenCV camera frame
        normals = geometry.normals.reshape(-1, 3) @ rotation.T
        z_near, z_far = float(positions[:, 2].min()), float(positions[:, 2].max())
        if z_far <= 0:
            raise ValueError(f"the object is entirely behind the camera (max camera z = {z_far:.4g} m)")
        self._set_camera(K, z_near=max(0.9 * z_near, 1e-3 * z_far), z_far=1.1 * z_far)
        self._set_mesh(
            positions @ _OPENGL_FROM_CAMERA,
            normals @ _OPENGL_FROM_CAMERA,
            uv,
            appearance,
        )
        self._set_lights(appearance)

        rgba, depth = self._renderer.render(self._scene, flags=self._pyrender.RenderFlags.RGBA)
        self._scene.remove_node(self._mesh_node)
        self._mesh_node = None

        mask = depth > 0
        depth = np.where(mask, depth, 0.0).astype(np.float32)
        if rgba.shape[2] == 4:  # framebuffer path (EGL): 4x multisampled coverage
            alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        else:  # pyrender's OSMesa path reads the default buffer: RGB only, no multisampling
            alpha = mask[..., None].astype(np.float32)
        rgb = rgba[..., :3].astype(np.float32) + (1.0 - alpha) * appearance.background.astype(np.float32)
        rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        return RenderResult(rgb=rgb, mask=mask, depth=depth)

    def _shading_geometry(self, vertices: np.ndarray, faces: np.ndarray) -> ShadingGeometry:
        """Shading geometry of the mesh, reused while consecutive calls pass the same mesh content
        (a dataset renders each object from several views)."""
        vertices, faces = (
            np.ascontiguousarray(vertices, dtype=np.float64),
            np.ascontiguousarray(faces),
        )
        digest = hashlib.blake2b(vertices.tobytes(), digest_size=16)
        digest.update(str((vertices.shape, faces.shape, faces.dtype.str)).encode())
        digest.update(faces.tobytes())
        key = digest.digest()
        if self._geometry_cache is None or self._geometry_cache[0] != key:
            self._geometry_cache = (key, shading_geometry(vertices, faces))
        return self._geometry_cache[1]

    def _set_camera(self, K: np.ndarray, *, z_near: float, z_far: float) -> None:
        camera = self._camera
        camera.fx, camera.fy = K[0, 0], K[1, 1]
        # pyrender measures the principal point from the image edge, OpenCV from the first pixel centre.
        camera.cx, camera.cy = K[0, 2] + 0.5, K[1, 2] + 0.5
        camera.znear, camera.zfar = z_near, z_far

    def _set_mesh(
        self,
        positions: np.ndarray,
        normals: np.ndarray,
        uv: np.ndarray,
        appearance: Appearance,
    ) -> None:
        pyrender = self._pyrender
        # Two-sided: append each triangle with reversed corner order and flipped normals.
        sampler = pyrender.Sampler(magFilter=pyrender.GLTF.LINEAR, minFilter=pyrender.GLTF.LINEAR_MIPMAP_LINEAR)
        texture = pyrender.Texture(source=appearance.texture, source_channels="RGB", sampler=sampler)
        material = pyrender.MetallicRoughnessMaterial(
            baseColorFactor=np.ones(4),
            baseColorTexture=texture,
            metallicFactor=appearance.metallic,
            roughnessFactor=appearance.roughness,
        )
        primitive = pyrender.Primitive(
            positions=np.concatenate([positions, _reversed_corners(positions)]).astype(np.float32),
            normals=np.concatenate([normals, -_reversed_corners(normals)]).astype(np.float32),
            texcoord_0=np.concatenate([uv, _reversed_corners(uv)]).astype(np.float32),
            material=material,
        )
        self._mesh_node = self._scene.add(pyrender.Mesh(primitives=[primitive]))

    def _set_lights(self, appearance: Appearance) -> None:
        self._scene.ambient_light = np.asarray(appearance.ambient, dtype=np.float64)
        for index, (light, node) in enumerate(zip(self._lights, self._light_nodes)):
            if index < len(appearance.lights):
                spec = appearance.lights[index]
                light.color, light.intensity = (
                    np.asarray(spec.color, dtype=np.float64),
                    float(spec.intensity),
                )
                self._scene.set_pose(node, _light_pose(spec.direction))
            else:
                light.intensity = 0.0
