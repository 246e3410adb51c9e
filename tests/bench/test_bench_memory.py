"""The memory benchmark suite in quick mode, called directly (no worker processes): it measures what it says."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pointstn.bench import memory
from pointstn.bench.worker import MemoryProbe


def test_rss_summary_matches_a_least_squares_reference():
    rng = np.random.default_rng(0)
    samples = list(300.0 + 0.25 * np.arange(50) + rng.normal(0, 0.01, 50))
    summary = memory.rss_summary(samples)
    first = int(50 * memory.SKIP_FRACTION)
    x = np.arange(50 - first, dtype=np.float64)
    y = np.asarray(samples[first:])
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert summary["growth_kb_per_item"] == pytest.approx(slope * 1024, rel=1e-9)
    assert summary["growth_kb_per_item"] == pytest.approx(256, rel=0.01)
    assert (summary["rss_start_mb"], summary["rss_middle_mb"], summary["rss_end_mb"]) == (samples[0], samples[25], samples[-1])
    assert summary["items"] == 50
    with pytest.raises(ValueError):
        memory.rss_summary([1.0])


@pytest.mark.timeout(300)
def test_memory_suite_quick_cases_measure_rss_per_image_and_per_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv("POINTSTN_BENCH_DATA", str(tmp_path / "cache"))
    cases = memory.cases(quick=True)
    assert [c["case"] for c in cases] == ["predict, one image at a time", "train, epochs in one process"]
    report_cases = []
    assert cases[0]["params"]["images"] == 20 and cases[1]["params"]["epochs"] == 3
    smaller = {"predictor": {"images": 6}, "trainer": {"epochs": 2}}  # CI time: the same code on fewer items
    for case in cases:
        [contender] = case["contenders"]
        case["params"] = {**case["params"], **smaller[contender["name"]]}
        probe = MemoryProbe()
        result = memory.measure(contender["name"], case["params"], warmup=contender["warmup"],
                                repeats=contender["repeats"], memory=probe)
        check = result["check"]
        items = case["params"]["images"] if contender["name"] == "predictor" else case["params"]["epochs"]
        assert check["items"] == items == len(check["rss_mb"])
        assert probe.after_inputs_mb is not None and all(v > 50 for v in check["rss_mb"])
        assert math.isfinite(check["growth_kb_per_item"]) and check["rss_max_mb"] >= check["rss_end_mb"]
        assert len(result["times_s"]) == items
        assert all(t > 0 for t in result["times_s"])
        report_cases.append({"case": case["case"], "params": case["params"], "results": {
            contender["name"]: {"timing": {"median_s": float(np.median(result["times_s"]))}, "check": check}}})
    text = memory.markdown({"title": memory.TITLE, "cases": report_cases, "environment": {
        "date": "d", "cpu": "c", "threads": 2, "command": "x", "quick": True}})
    assert "| predict, one image at a time | 6 |" in text and "KB/epoch" in text and "quick mode" in text
