"""Choosing the OpenGL platform for offscreen rendering, once per process.

PyOpenGL chooses its platform from ``PYOPENGL_PLATFORM`` when it is first imported and cannot
switch afterwards, so the choice is made once per process, here, at first use:
1. a value the user already set in ``PYOPENGL_PLATFORM`` is respected (it must be osmesa or egl);
2. otherwise the first of osmesa -> egl whose shared library loads is chosen and written to the
   environment before pyrender / OpenGL are imported;
3. if neither loads, ``MissingDependencyError`` says what to install.
A library that loads can still fail to create a context (e.g. EGL without a Mesa driver); the
renderer then raises a one-line ``PointstnError`` naming the cause. Falling back to the other
platform at that point is impossible in the same process, because OpenGL is already imported.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from types import ModuleType

from pointstn.errors import MissingDependencyError, PointstnError

PLATFORMS: tuple[str, ...] = ("osmesa", "egl")
_LIBRARIES = {
    "osmesa": ("libOSMesa.so", "libOSMesa.so.8", "libOSMesa.so.6"),
    "egl": ("libEGL.so", "libEGL.so.1"),
}
INSTALL_HINT = "apt-get install -y libosmesa6 (or, for EGL: libegl1 libegl-mesa0 libgl1-mesa-dri)"

_active_platform: str | None = None  # the platform this process committed to (set once)


def _library_available(platform: str) -> bool:
    """True if a shared library for ``platform`` can be loaded by the dynamic linker."""
    for name in _LIBRARIES[platform]:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def select_platform(requested: str = "auto") -> str:
    """Commit this process to an OpenGL platform (module docstring) and return its name.

    requested: "auto" (osmesa, then egl), "osmesa" or "egl".
    """
    global _active_platform
    if requested not in ("auto", *PLATFORMS):
        raise ValueError(f"unknown render backend {requested!r}; valid backends are {('auto', *PLATFORMS)}")
    if _active_platform is not None:
        if requested not in ("auto", _active_platform):
            raise PointstnError(
                f"OpenGL is already initialised with platform {_active_platform!r} in this process; "
                f"cannot switch to {requested!r} (use backend='auto' or start a new process)"
            )
        return _active_platform
    preset = os.environ.get("PYOPENGL_PLATFORM")
    if preset:
        if preset not in PLATFORMS:
            raise PointstnError(
                f"PYOPENGL_PLATFORM={preset!r} is not an offscreen platform pointstn supports; "
                f"set it to one of {PLATFORMS} or unset it"
            )
        if requested not in ("auto", preset):
            raise PointstnError(f"backend {requested!r} requested but PYOPENGL_PLATFORM={preset!r} is set")
        chosen = preset
    else:
        if "OpenGL" in sys.modules:
            raise PointstnError(
                "OpenGL was imported before pointstn chose an offscreen platform; "
                "set PYOPENGL_PLATFORM=osmesa (or egl) before importing OpenGL/pyrender"
            )
        candidates = PLATFORMS if requested == "auto" else (requested,)
        chosen = next((p for p in candidates if _library_available(p)), "")
        if not chosen:
            raise MissingDependencyError(
                package="OSMesa or EGL (" + " / ".join(candidates) + ")",
                feature="offscreen rendering",
                install=INSTALL_HINT,
            )
        os.environ["PYOPENGL_PLATFORM"] = chosen
    _active_platform = chosen
    return chosen


def import_pyrender() -> ModuleType:
    """Import pyrender (call ``select_platform`` first), or say what to install."""
    # PyOpenGL logs "No OpenGL_accelerate module loaded" at INFO on import; it is not a problem
    logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)
    try:
        import pyrender
    except ImportError as error:
        raise MissingDependencyError(
            package="pyrender-maintained",
            feature="rendering",
            install="pip install pyrender-maintained",
        ) from error
    return pyrender
