"""A self-contained HTML page with an interactive 3D view of point clouds; works offline.

Everything is inline: the clouds as base64 little-endian float32 inside a JSON <script> block, and a
small renderer written here (canvas 2D, z-buffered points; no CDN, no external file, no WebGL
needed). Drag to rotate, wheel to zoom, double-click or "r" to reset; a checkbox per cloud.
The initial view is the data frame's own camera: x right, y down, looking along +z, so camera-frame
clouds appear as in the input image. Colour: one cloud is coloured by depth (its z) with a colour
bar in the given units; several clouds get one hue each, darker with depth.

Untrusted text (titles, file names, info lines) is escaped: the page title through `html.escape`, the
rest travels as JSON with "<" written as "\\u003c" and is inserted with `textContent` only.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pointstn.errors import PointstnError
from pointstn.io.atomic import atomic_write_text

# Hues for several clouds (colour-blind friendly: Okabe-Ito), in order.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")


@dataclass(frozen=True, eq=False)
class ViewerCloud:
    """name: legend label; points: (N, 3) finite floats; color: "#rrggbb" or None (depth colours)."""

    name: str
    points: np.ndarray
    color: str | None = None


def _encode(points: np.ndarray, name: str) -> str:
    values = np.asarray(points)
    if values.ndim != 2 or values.shape[1] != 3 or values.shape[0] == 0:
        raise PointstnError(f"cloud '{name}' must be a non-empty (N, 3) array; got shape {values.shape}")
    if not np.isfinite(values).all():
        raise PointstnError(f"cloud '{name}' holds NaN or inf coordinates")
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode("ascii")


def _as_clouds(clouds: Sequence[ViewerCloud] | Mapping[str, np.ndarray]) -> list[ViewerCloud]:
    if isinstance(clouds, Mapping):
        clouds = [ViewerCloud(name=str(k), points=np.asarray(v)) for k, v in clouds.items()]
    clouds = list(clouds)
    if not clouds:
        raise PointstnError("the viewer needs at least one cloud")
    if len(clouds) > 1:  # several clouds: one hue each unless given
        clouds = [c if c.color else ViewerCloud(c.name, c.points, PALETTE[i % len(PALETTE)]) for i, c in enumerate(clouds)]
    return clouds


def cloud_viewer_html(clouds: Sequence[ViewerCloud] | Mapping[str, np.ndarray], *, title: str,
                      info: Sequence[tuple[str, str]] = (), units: str = "m") -> str:
    """The page as a string. `info`: (label, value) lines shown in the panel; `units` label the depth bar."""
    payload = {
        "title": str(title),
        "units": str(units),
        "info": [[str(k), str(v)] for k, v in info],
        "clouds": [{"name": c.name, "color": c.color, "xyz": _encode(c.points, c.name)} for c in _as_clouds(clouds)],
    }
    data = json.dumps(payload, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _TEMPLATE.replace("%TITLE%", html.escape(str(title))).replace("%DATA%", data).replace("%SCRIPT%", _SCRIPT)


def write_cloud_viewer(path: str | os.PathLike[str], clouds: Sequence[ViewerCloud] | Mapping[str, np.ndarray], *,
                       title: str, info: Sequence[tuple[str, str]] = (), units: str = "m") -> None:
    """Write `cloud_viewer_html(...)` atomically to `path`."""
    atomic_write_text(path, cloud_viewer_html(clouds, title=title, info=info, units=units))


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>
html, body { margin: 0; height: 100%; background: #ffffff; font: 13px/1.35 system-ui, sans-serif; color: #222; }
#view { display: block; width: 100vw; height: 100vh; cursor: grab; touch-action: none; }
#panel { position: absolute; top: 8px; left: 8px; max-width: 46ch; padding: 6px 9px; background: rgba(255,255,255,0.85);
         border: 1px solid #ccc; border-radius: 4px; }
#panel h1 { font-size: 14px; margin: 0 0 4px 0; word-break: break-all; }
#panel .row { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#panel .swatch { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 2px; vertical-align: middle; }
#bar { width: 160px; height: 10px; margin-top: 4px; }
#help { color: #666; margin-top: 4px; }
</style>
</head>
<body>
<canvas id="view"></canvas>
<div id="panel"><h1 id="title"></h1><div id="info"></div><div id="legend"></div>
<div id="help">drag: rotate &middot; wheel: zoom &middot; double-click or r: reset</div></div>
<script id="pointstn-data" type="application/json">%DATA%</script>
<script>
%SCRIPT%
</script>
</body>
</html>
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("pointstn-data").textContent);
  var canvas = document.getElementById("view");
  var ctx = canvas.getContext("2d");
  var VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

  function decode(b64) {
    var bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Float32Array(bytes.buffer);
  }
  function hexColor(hex) {
    return [parseInt(hex.substr(1, 2), 16), parseInt(hex.substr(3, 2), 16), parseInt(hex.substr(5, 2), 16)];
  }
  function viridis(t) {
    var x = Math.min(Math.max(t, 0), 1) * (VIRIDIS.length - 1), i = Math.min(Math.floor(x), VIRIDIS.length - 2), f = x - i;
    return [0, 1, 2].map(function (k) { return Math.round(VIRIDIS[i][k] * (1 - f) + VIRIDIS[i + 1][k] * f); });
  }

  var clouds = data.clouds.map(function (c) { return {name: c.name, color: c.color, xyz: decode(c.xyz), visible: true}; });
  var lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
  clouds.forEach(function (c) {
    for (var i = 0; i < c.xyz.length; i += 3) for (var k = 0; k < 3; k++) {
      lo[k] = Math.min(lo[k], c.xyz[i + k]); hi[k] = Math.max(hi[k], c.xyz[i + k]);
    }
  });
  var centre = [0, 1, 2].map(function (k) { return 0.5 * (lo[k] + hi[k]); });
  var radius = 0.5 * Math.sqrt(Math.pow(hi[0] - lo[0], 2) + Math.pow(hi[1] - lo[1], 2) + Math.pow(hi[2] - lo[2], 2)) || 1;
  var depthSpan = (hi[2] - lo[2]) || 1;
  clouds.forEach(function (c) {
    var n = c.xyz.length / 3, rgb = new Uint8ClampedArray(3 * n), base = c.color ? hexColor(c.color) : null;
    for (var i = 0; i < n; i++) {
      var t = (c.xyz[3 * i + 2] - lo[2]) / depthSpan;
      var col = base ? base.map(function (v) { return v * (1.15 - 0.65 * t); }) : viridis(1 - t);
      rgb[3 * i] = col[0]; rgb[3 * i + 1] = col[1]; rgb[3 * i + 2] = col[2];
    }
    c.rgb = rgb;
  });

  var rot, zoom;
  function reset() { rot = [1, 0, 0, 0, 1, 0, 0, 0, 1]; zoom = 1; schedule(); }
  function mul(a, b) {
    var o = new Array(9);
    for (var r = 0; r < 3; r++) for (var c = 0; c < 3; c++)
      o[3 * r + c] = a[3 * r] * b[c] + a[3 * r + 1] * b[3 + c] + a[3 * r + 2] * b[6 + c];
    return o;
  }
  function rotX(t) { var c = Math.cos(t), s = Math.sin(t); return [1, 0, 0, 0, c, -s, 0, s, c]; }
  function rotY(t) { var c = Math.cos(t), s = Math.sin(t); return [c, 0, s, 0, 1, 0, -s, 0, c]; }

  function draw() {
    pending = false;
    var dpr = window.devicePixelRatio || 1;
    var w = Math.max(1, Math.floor(canvas.clientWidth * dpr)), h = Math.max(1, Math.floor(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    var image = ctx.createImageData(w, h), px = image.data;
    px.fill(255);
    var zbuf = new Float32Array(w * h).fill(Infinity);
    var dist = 4 * radius, f = 0.42 * Math.min(w, h) / radius * zoom * (dist + radius) / dist;
    var size = Math.max(2, Math.round(2 * dpr * Math.sqrt(zoom)));
    clouds.forEach(function (c) {
      if (!c.visible) return;
      var xyz = c.xyz, rgb = c.rgb;
      for (var i = 0, n = xyz.length / 3; i < n; i++) {
        var x = xyz[3 * i] - centre[0], y = xyz[3 * i + 1] - centre[1], z = xyz[3 * i + 2] - centre[2];
        var vx = rot[0] * x + rot[1] * y + rot[2] * z, vy = rot[3] * x + rot[4] * y + rot[5] * z;
        var vz = rot[6] * x + rot[7] * y + rot[8] * z, p = dist / (dist + vz);
        var sx = Math.round(w / 2 + f * vx * p - size / 2), sy = Math.round(h / 2 + f * vy * p - size / 2);
        for (var dy = 0; dy < size; dy++) {
          var yy = sy + dy;
          if (yy < 0 || yy >= h) continue;
          for (var dx = 0; dx < size; dx++) {
            var xx = sx + dx;
            if (xx < 0 || xx >= w) continue;
            var at = yy * w + xx;
            if (vz < zbuf[at]) {
              zbuf[at] = vz; px[4 * at] = rgb[3 * i]; px[4 * at + 1] = rgb[3 * i + 1]; px[4 * at + 2] = rgb[3 * i + 2];
            }
          }
        }
      }
    });
    ctx.putImageData(image, 0, 0);
  }
  var pending = false;
  function schedule() { if (!pending) { pending = true; window.requestAnimationFrame(draw); } }

  function text(tag, content, cls) {
    var el = document.createElement(tag); el.textContent = content; if (cls) el.className = cls; return el;
  }
  document.getElementById("title").textContent = data.title;
  var info = document.getElementById("info");
  data.info.forEach(function (kv) { info.appendChild(text("div", kv[0] + ": " + kv[1], "row")); });
  var legend = document.getElementById("legend");
  clouds.forEach(function (c) {
    var row = document.createElement("label"), box = document.createElement("input"), sw = document.createElement("span");
    row.className = "row"; row.style.display = "block";
    box.type = "checkbox"; box.checked = true;
    box.addEventListener("change", function () { c.visible = box.checked; schedule(); });
    sw.className = "swatch"; sw.style.background = c.color || "linear-gradient(90deg, #fde725, #21918c, #440154)";
    row.appendChild(box); row.appendChild(sw); row.appendChild(text("span", c.name + " (" + (c.xyz.length / 3) + " points)"));
    legend.appendChild(row);
  });
  if (clouds.length === 1 && !clouds[0].color) {
    var bar = document.createElement("canvas"); bar.id = "bar"; bar.width = 160; bar.height = 10;
    var bctx = bar.getContext("2d");
    for (var i = 0; i < 160; i++) { var c = viridis(1 - i / 159); bctx.fillStyle = "rgb(" + c.join(",") + ")"; bctx.fillRect(i, 0, 1, 10); }
    legend.appendChild(text("div", "depth z, near " + lo[2].toPrecision(4) + " " + data.units + " to far " +
                                   hi[2].toPrecision(4) + " " + data.units, "row"));
    legend.appendChild(bar);
  }

  var dragging = null;
  canvas.addEventListener("pointerdown", function (e) { dragging = [e.clientX, e.clientY]; canvas.setPointerCapture(e.pointerId); });
  canvas.addEventListener("pointerup", function () { dragging = null; });
  canvas.addEventListener("pointermove", function (e) {
    if (!dragging) return;
    var dx = e.clientX - dragging[0], dy = e.clientY - dragging[1];
    dragging = [e.clientX, e.clientY];
    rot = mul(rotY(-dx * 0.01), mul(rotX(dy * 0.01), rot));
    schedule();
  });
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    zoom = Math.min(50, Math.max(0.05, zoom * Math.exp(-e.deltaY * 0.0015)));
    schedule();
  }, {passive: false});
  canvas.addEventListener("dblclick", reset);
  window.addEventListener("keydown", function (e) { if (e.key === "r" || e.key === "R") reset(); });
  window.addEventListener("resize", schedule);
  rot = [1, 0, 0, 0, 1, 0, 0, 0, 1]; zoom = 1;
  draw();
})();
"""
