"""Rendering for the data pipeline: camera rig, appearance randomization, offscreen renderer.

Importing this package is cheap (numpy only); pyrender/OpenGL are imported when a ``Renderer``
is first created (see ``backend.py`` for how the OpenGL platform is chosen).
"""

from pointstn.data.render.appearance import Appearance, AppearanceSampler, Light
from pointstn.data.render.backend import Renderer, RenderResult
from pointstn.data.render.gl_platform import select_platform
from pointstn.data.render.rig import (
    VIEWPOINT_BINS,
    Rig,
    View,
    look_at_rotation,
    project,
)

__all__ = [
    "VIEWPOINT_BINS",
    "Appearance",
    "AppearanceSampler",
    "Light",
    "RenderResult",
    "Renderer",
    "Rig",
    "View",
    "look_at_rotation",
    "project",
    "select_platform",
]
