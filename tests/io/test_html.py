"""The offline HTML viewer: exact embedded data, escaping, no external resources, and a real render in
headless Chromium (skipped with the reason when Chromium is not installed)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pointstn.errors import PointstnError
from pointstn.io.html import PALETTE, ViewerCloud, cloud_viewer_html, write_cloud_viewer

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def sphere(seed: int, count: int = 3000) -> np.ndarray:
    points = np.random.default_rng(seed).normal(size=(count, 3))
    return 0.1 * points / np.linalg.norm(points, axis=1, keepdims=True) + [0.0, 0.0, 1.0]


def embedded(page: str) -> dict:
    match = re.search(r'<script id="pointstn-data" type="application/json">(.*?)</script>', page, re.DOTALL)
    assert match is not None
    return json.loads(match.group(1))


def test_points_round_trip_exactly_as_float32():
    clouds = {"a": sphere(0), "b": sphere(1, 10)}
    data = embedded(cloud_viewer_html(clouds, title="t", info=[("volume", "1 cm^3")]))
    assert [c["name"] for c in data["clouds"]] == ["a", "b"]
    assert [c["color"] for c in data["clouds"]] == list(PALETTE[:2])  # several clouds: one hue each
    for cloud, (_, points) in zip(data["clouds"], clouds.items()):
        decoded = np.frombuffer(base64.b64decode(cloud["xyz"]), dtype="<f4").reshape(-1, 3)
        assert np.array_equal(decoded, points.astype(np.float32))
    assert data["info"] == [["volume", "1 cm^3"]] and data["units"] == "m"
    single = embedded(cloud_viewer_html({"only": sphere(2)}, title="t"))
    assert single["clouds"][0]["color"] is None  # one cloud: coloured by depth


def test_untrusted_text_is_escaped():
    evil = '</script><script>alert("x")</script><!--'
    page = cloud_viewer_html([ViewerCloud(evil, sphere(3))], title=evil, info=[(evil, evil)])
    assert "<script>alert" not in page and page.count("</script>") == 2  # only the page's own two blocks
    assert "<title>&lt;/script&gt;" in page
    data = embedded(page)
    assert data["title"] == evil and data["clouds"][0]["name"] == evil and data["info"] == [[evil, evil]]


def test_self_contained():
    page = cloud_viewer_html({"a": sphere(4)}, title="t")
    assert not re.search(r"https?://|src=|href=|@import|url\(", page)


def test_bad_clouds_are_refused(tmp_path):
    with pytest.raises(PointstnError, match="at least one cloud"):
        cloud_viewer_html({}, title="t")
    with pytest.raises(PointstnError, match="NaN or inf"):
        cloud_viewer_html({"a": np.array([[0.0, np.nan, 1.0]])}, title="t")
    with pytest.raises(PointstnError, match="non-empty \\(N, 3\\)"):
        cloud_viewer_html({"a": np.zeros((0, 3))}, title="t")
    with pytest.raises(PointstnError, match="does not exist"):
        write_cloud_viewer(tmp_path / "missing" / "v.html", {"a": sphere(5)}, title="t")


def screenshot(page: Path, png: Path, profile: Path) -> None:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               f"--screenshot={png}", "--window-size=800,600", page.resolve().as_uri()]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and png.exists(), result.stderr[-500:]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install -y chromium) - the viewer "
                                             "is not rendered in a browser")
@pytest.mark.parametrize("clouds", [1, 2])
def test_chromium_renders_the_clouds(tmp_path, clouds):
    data = {f"cloud {i}": sphere(10 + i) + [0.06 * i, 0.0, 0.0] for i in range(clouds)}
    write_cloud_viewer(tmp_path / "v.html", data, title="headless check")
    screenshot(tmp_path / "v.html", tmp_path / "shot.png", tmp_path / "profile")
    with Image.open(tmp_path / "shot.png") as shot:
        pixels = np.asarray(shot.convert("RGB"))
    assert pixels.shape[:2] == (600, 800)
    canvas = pixels[200:, :]  # below the info panel
    drawn = (canvas != 255).any(axis=-1)
    colours = np.unique(canvas[drawn].reshape(-1, 3), axis=0)
    assert drawn.mean() > 0.02, "the canvas is blank"
    assert len(colours) >= (40 if clouds == 1 else 20), f"only {len(colours)} distinct colours"
    # the sphere is drawn where it should be: centred horizontally (one cloud) within 10 % of the width
    columns = np.flatnonzero(drawn.any(axis=0))
    if clouds == 1:
        assert abs((columns[0] + columns[-1]) / 2 - 400) < 80
