"""The benchmark runner on tiny sizes: valid JSON, a Markdown section that coexists with others.

No timing assertions: timings depend on the machine.
"""

import json

import pytest

from pointstn.bench import chamfer
from pointstn.bench.runner import SUITES, run, timing_summary, write_section


def test_chamfer_suite_runs_quick_and_writes_json_and_markdown(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nintro\n\n<!-- bench:decoder:begin -->\ndecoder table\n<!-- bench:decoder:end -->\n")
    out_json = tmp_path / "bench.json"
    report = run(["chamfer"], out_md=md, out_json=out_json, quick=True, threads=1, command="pytest smoke")

    data = json.loads(out_json.read_text())
    cases = data["suites"]["chamfer"]["cases"]
    assert [c["params"]["points"] for c in cases] == list(chamfer.QUICK_SIZES)
    assert data["suites"]["chamfer"]["environment"]["command"] == "pytest smoke"
    assert report["environment"]["threads"] == 1
    assert len(report["environment"]["load_average_end"]) == 3
    for case in cases:
        assert {"pointstn-kdtree", "pointstn-kdtree-scipy", "pointstn-bruteforce"} <= set(case["results"])
        for result in case["results"].values():
            timing = result["timing"]
            assert timing["n"] == 2 and timing["min_s"] <= timing["median_s"] <= timing["max_s"]
            assert result["threads"] == 1 and result["peak_extra_mb"] >= 0
            assert len(result["check"]["per_cloud"]) == chamfer.BATCH
        tree = case["results"]["pointstn-kdtree"]["check"]
        brute = case["results"]["pointstn-bruteforce"]["check"]
        assert chamfer.max_rel_diff(tree["per_cloud"], brute["per_cloud"]) < 1e-5
        assert chamfer.max_rel_diff(tree["grad_norms"], brute["grad_norms"]) < 1e-5
        scipy_tree = case["results"]["pointstn-kdtree-scipy"]["check"]  # same neighbours, same values
        assert scipy_tree["per_cloud"] == tree["per_cloud"] and scipy_tree["grad_norms"] == tree["grad_norms"]

    text = md.read_text()
    assert "decoder table" in text and text.startswith("# Benchmarks\n\nintro")
    assert text.count("<!-- bench:chamfer:begin -->") == 1 and text.count("<!-- bench:chamfer:end -->") == 1
    section = text.split("<!-- bench:chamfer:begin -->")[1].split("<!-- bench:chamfer:end -->")[0]
    assert "| 64 | pointstn-kdtree |" in section and "| 256 | pointstn-bruteforce |" in section
    assert "quick mode" in section


def test_write_section_replaces_only_its_own_block(tmp_path):
    path = tmp_path / "docs" / "BENCHMARKS.md"
    write_section(path, "chamfer", "first")
    write_section(path, "decoder", "theirs")
    write_section(path, "chamfer", "second")
    text = path.read_text()
    assert "first" not in text and "second" in text and "theirs" in text
    assert text.index("second") < text.index("theirs")  # replaced in place, not appended


def test_timing_summary_and_unknown_suite():
    summary = timing_summary([3.0, 1.0, 2.0, 4.0])
    assert summary["median_s"] == 2.5 and summary["min_s"] == 1.0 and summary["max_s"] == 4.0
    assert summary["iqr_s"] > 0
    assert "chamfer" in SUITES
    with pytest.raises(ValueError, match="unknown benchmark suite"):
        run(["nope"])


def test_quoted_pytorch3d_figures_are_labelled(tmp_path):
    report = {
        "title": chamfer.TITLE,
        "environment": {"date": "d", "cpu": "c", "cpu_count": 2, "threads": 2, "torch": "t", "scipy": "s",
                        "numpy": "n", "spconv": "sp", "pytorch3d": None, "command": "cmd", "quick": False},
        "cases": [{"params": {"points": 2048}, "results": {"pointstn-kdtree": {
            "timing": {"median_s": 0.0215, "min_s": 0.02, "max_s": 0.03, "iqr_s": 0.001, "n": 3},
            "peak_extra_mb": 5.0, "check": {"per_cloud": [1.0], "grad_norms": [1.0]}}}}],
    }  # fmt: skip
    text = chamfer.markdown(report)
    assert "10.0x (quoted)" in text and "not measured here" in text
