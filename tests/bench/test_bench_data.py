"""The data benchmark suite runs on tiny sizes and writes its Markdown section and JSON entry."""

from __future__ import annotations

import json

from pointstn.bench.runner import run


def test_data_suite_quick(tmp_path, monkeypatch):
    monkeypatch.setenv("POINTSTN_BENCH_DATA", str(tmp_path / "cache"))
    out_md, out_json = tmp_path / "BENCHMARKS.md", tmp_path / "bench.json"
    report = run(["data"], out_md=out_md, out_json=out_json, quick=True, threads=1)
    cases = report["suites"]["data"]["cases"]
    assert [c["case"] for c in cases] == ["render 128 px", "loader, batch 16"]
    assert set(cases[1]["results"]) == {"workers-0", "workers-2"}
    for case in cases:
        for result in case["results"].values():
            assert result["timing"]["median_s"] > 0 and result["timing"]["n"] >= 1
    text = out_md.read_text()
    assert "<!-- bench:data:begin -->" in text and "| loader, batch 16 | workers-2 |" in text and "views/s" in text
    assert "data" in json.loads(out_json.read_text())["suites"]
