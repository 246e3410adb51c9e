"""The scaling benchmark suite on tiny sizes: its plan, its quick run, the table and the PNG beside the Markdown.

No timing assertions: timings depend on the machine.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from PIL import Image

from pointstn.bench import scaling
from pointstn.bench.runner import run
from tests.bench.test_bench_model import run_workers_in_process


def test_plan_varies_one_factor_at_a_time_from_the_default_config():
    plan = {case["params"]["factor"]: case for case in scaling.cases(quick=False)}
    assert list(plan) == ["resolution", "points_per_voxel", "batch"]
    variants = {factor: case["params"]["variants"] for factor, case in plan.items()}
    assert [v["overrides"] for v in variants["resolution"].values()] == [
        ["model.decoder.resolution=16"], ["model.decoder.resolution=32"], ["model.decoder.resolution=64"]]
    assert [v["overrides"] for v in variants["points_per_voxel"].values()] == [
        [f"model.decoder.points_per_voxel={k}"] for k in (1, 4, 16)]
    assert [(v["batch"], v["overrides"]) for v in variants["batch"].values()] == [(1, []), (4, []), (16, [])]
    # the other factors stay at the default (batch 16 = configs/base.yaml's train.batch_size)
    assert {v["batch"] for f in ("resolution", "points_per_voxel") for v in variants[f].values()} == {16}
    for case in plan.values():
        assert [c["name"] for c in case["contenders"]] == list(case["params"]["variants"])
        assert case["params"]["config"] == "base.yaml"


@pytest.mark.parametrize(("out_md", "png"), [
    ("docs/BENCHMARKS.md", "docs/benchmarks_scaling.png"), ("/tmp/x/Report.md", "/tmp/x/report_scaling.png"),
])  # fmt: skip
def test_figure_path_is_beside_the_markdown(out_md, png):
    assert scaling.figure_path(Path(out_md)) == Path(png)


def test_scaling_suite_quick_writes_table_json_and_png(tmp_path, monkeypatch):
    jobs = run_workers_in_process(monkeypatch)
    out_md, out_json = tmp_path / "docs" / "BENCHMARKS.md", tmp_path / "docs" / "bench.json"
    run(["scaling"], out_md=out_md, out_json=out_json, quick=True, threads=1, command="pytest scaling")
    assert len(jobs) == 6 and all(j["suite"] == "scaling" for j in jobs)

    cases = {c["params"]["factor"]: c for c in json.loads(out_json.read_text())["suites"]["scaling"]["cases"]}
    rows = {factor: scaling.rows(case) for factor, case in cases.items()}
    assert [r["value"] for r in rows["resolution"]] == [8, 16]
    assert [(r["value"], r["batch"]) for r in rows["batch"]] == [(1, 1), (2, 2)]
    for factor_rows in rows.values():
        for r in factor_rows:
            assert r["n"] == 1 and r["median_s"] > 0 and r["peak_extra_mb"] >= 0 and r["peak_rss_mb"] > 0
    # a finer grid proposes more candidate voxels per sample; more points per voxel give more points
    assert rows["resolution"][1]["candidates"] > rows["resolution"][0]["candidates"]
    k1, k2 = rows["points_per_voxel"]
    assert k2["points"] == pytest.approx(2 * k1["points"], rel=0.2)

    png = tmp_path / "docs" / "benchmarks_scaling.png"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 400
        assert len(image.convert("L").getcolors(maxcolors=1 << 16) or ()) > 10  # drawn, not blank
    section = out_md.read_text().split("<!-- bench:scaling:begin -->")[1].split("<!-- bench:scaling:end -->")[0]
    assert "quick mode" in section and "](benchmarks_scaling.png)" in section
    table = [line for line in section.splitlines() if line.startswith(("| voxel", "| points", "| batch"))]
    assert len(table) == 6 and all(line.count("|") == 12 for line in table)
    assert "| voxel resolution R | 16 | 2 |" in section and "| batch size | 1 | 1 |" in section


def test_markdown_without_a_figure_has_no_image_link():
    env = {"date": "d", "cpu": "c", "cpu_count": 2, "threads": 2, "torch": "t", "spconv": "s", "command": "cmd",
           "quick": False}
    result = {"timing": {"median_s": 2.0, "min_s": 1.0, "max_s": 3.0, "n": 2}, "peak_extra_mb": 100.0,
              "check": {"value": 4, "batch": 4, "peak_rss_mb": 900.0, "output_points_per_sample": 10.0,
                        "finest_candidates_per_sample": 20.0}}
    report = {"title": scaling.TITLE, "environment": env,
              "cases": [{"case": "batch size", "params": {"config": "base.yaml"}, "results": {"batch=4": result}}]}
    text = scaling.markdown(report)
    assert "![" not in text and "quick mode" not in text
    assert "| batch size | 4 | 4 | 2.000 | 1.000 .. 3.000 | 2 | 500 | 10 | 20 | 100 | 900 |" in text


def test_figure_draws_a_panel_with_zero_memory_without_warnings(tmp_path):
    # quick mode's tiny cases can all measure 0 MB of extra memory, which a log axis cannot show
    env = {"date": "d", "cpu": "c", "cpu_count": 2, "threads": 2, "torch": "t", "spconv": "s", "command": "cmd",
           "quick": True}

    def result(value, mb):
        return {"timing": {"median_s": 0.1 * value, "min_s": 0.05, "max_s": 0.5, "n": 1}, "peak_extra_mb": mb,
                "check": {"value": value, "batch": value, "peak_rss_mb": 300.0, "output_points_per_sample": 10.0,
                          "finest_candidates_per_sample": 20.0}}

    report = {"title": scaling.TITLE, "environment": env,
              "cases": [{"case": "batch size", "params": {"config": "smoke.yaml"},
                         "results": {"batch=1": result(1, 0.0), "batch=2": result(2, 0.0)}}]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = scaling.figure(report, out_md=tmp_path / "BENCHMARKS.md")
    assert png.exists() and png.stat().st_size > 1000
