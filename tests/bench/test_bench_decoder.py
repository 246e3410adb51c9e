"""The decoder benchmark suite on tiny sizes: its plan, its measurements, its Markdown section.

No timing assertions: timings depend on the machine.
"""

from __future__ import annotations

import json

import pytest
import torch

from pointstn.bench import decoder
from pointstn.bench.runner import SUITES, run, timing_summary
from pointstn.bench.worker import MemoryProbe

ENV = {
    "date": "d",
    "cpu": "c",
    "cpu_count": 2,
    "threads": 2,
    "torch": "t",
    "spconv": "s",
    "command": "cmd",
    "quick": False,
}


def test_plan_marks_dense_infeasible_only_where_the_memory_bound_is_exceeded():
    full = decoder.cases(quick=False)
    assert [(c["params"]["resolution"], c["params"]["allocator"], c["params"]["recompute"]) for c in full] == [
        (32, "glibc default", False), (32, "mmap threshold 64 KB", False), (32, "mmap threshold 64 KB", True),
        (64, "glibc default", False), (64, "mmap threshold 64 KB", False), (64, "mmap threshold 64 KB", True),
        (128, "glibc default", False)]
    assert [c["params"]["worker_env"] for c in full[:2]] == [
        {"POINTSTN_ALLOCATOR": "glibc"}, {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}]
    plan = {c["params"]["resolution"]: c for c in full if c["params"]["allocator"] == "glibc default"}
    assert sorted(plan) == [32, 64, 128]
    assert [plan[r]["params"]["dense_batch"] for r in (32, 64, 128)] == [4, 4, 1]
    estimates = [plan[r]["params"]["dense_estimate_gb"] for r in (32, 64, 128)]
    assert estimates[1] == pytest.approx(8 * estimates[0]) and estimates[2] > decoder.MEMORY_BOUND_GB
    assert all({c["name"] for c in case["contenders"]} == {"sparse", "dense"} for case in plan.values())
    quick = decoder.cases(quick=True)
    assert [case["params"]["dense_batch"] for case in quick] == [2, 2, 2, 1]  # the last one exercises extrapolation
    assert [case["case"] for case in quick] == [
        "R=8", "R=8, mmap threshold 64 KB", "R=8, mmap threshold 64 KB, recompute", "R=16"]


def test_inputs_are_thin_shells_inside_the_unit_cube():
    points, features, gt = decoder.make_inputs(batch=4, input_points=500, target_points=2000, in_channels=3, seed=0)
    assert points.shape == (4, 500, 3) and features.shape == (4, 500, 3) and gt.shape == (4, 2000, 3)
    assert points.abs().max() <= 0.5 and gt.abs().max() <= 0.5 + 1e-6
    extents = gt.amax(dim=1) - gt.amin(dim=1)
    torch.testing.assert_close(extents.amax(dim=1), torch.ones(4), atol=0.02, rtol=0)  # longest edge 1
    # a shell: the sphere's samples all lie at radius 0.5
    torch.testing.assert_close(gt[0].norm(dim=1), torch.full((2000,), 0.5))
    with pytest.raises(ValueError, match="unknown shape"):
        decoder.surface_samples("cone", 3, torch.Generator())


@pytest.fixture(scope="module")
def quick_results():
    """Both contenders measured in-process on the quick plan."""
    results = []
    for case in decoder.cases(quick=True):
        measured = {}
        for contender in case["contenders"]:
            raw = decoder.measure(contender["name"], case["params"], warmup=1, repeats=2, memory=MemoryProbe())
            measured[contender["name"]] = {
                "timing": timing_summary(raw["times_s"]), "peak_extra_mb": 10.0, "threads": 1, "check": raw["check"],
            }  # fmt: skip
        results.append({"case": case["case"], "params": case["params"], "results": measured})
    return results


def test_measure_reports_times_and_active_sets(quick_results):
    for case in quick_results:
        r = case["params"]["resolution"]
        sparse, dense = case["results"]["sparse"]["check"], case["results"]["dense"]["check"]
        assert case["results"]["sparse"]["timing"]["n"] == 2
        assert sparse["batch_measured"] == case["params"]["batch"]
        assert dense["batch_measured"] == case["params"]["dense_batch"]
        # the dense decoder scores every voxel; the sparse one scores a strict subset at the finest level
        assert dense["candidates_per_sample"] == [r**3, (r // 2) ** 3]
        assert 0 < sparse["candidates_per_sample"][0] < r**3
        assert sparse["kept_voxels_per_sample"] >= 1 and json.dumps(sparse)


def test_markdown_labels_extrapolated_and_infeasible_rows(quick_results):
    text = decoder.markdown({"title": decoder.TITLE, "environment": ENV, "cases": quick_results})
    rows = [line for line in text.splitlines() if line.startswith(("| 8 |", "| 16 |"))]
    assert len(rows) == 9  # two contenders per case + the infeasible note of the extrapolated case
    assert sum("recompute" in row for row in rows) == 2
    assert "extrapolated x2 from batch 1" in text and "*infeasible*" in text
    assert sum(row.startswith("| 8 | mmap threshold 64 KB | ") for row in rows) == 2
    sparse16 = next(row for row in rows if row.startswith("| 16 | glibc default | sparse"))
    speedup = float(sparse16.split("|")[11].strip().rstrip("x"))
    dense = next(c for c in quick_results if c["params"]["resolution"] == 16)["results"]["dense"]
    sparse = next(c for c in quick_results if c["params"]["resolution"] == 16)["results"]["sparse"]
    expected = 2 * dense["timing"]["median_s"] / sparse["timing"]["median_s"]
    assert speedup == pytest.approx(expected, rel=0.06, abs=0.06)


@pytest.mark.skipif("decoder" not in SUITES, reason="pointstn.bench.runner.SUITES does not list the decoder suite yet")
def test_runner_runs_the_suite_quick(tmp_path):
    report = run(
        ["decoder"], out_md=tmp_path / "B.md", out_json=tmp_path / "b.json", quick=True, threads=1, command="t"
    )
    cases = report["suites"]["decoder"]["cases"]
    assert [c["params"]["resolution"] for c in cases] == [8, 8, 8, 16]
    # the allocator setting and the recompute option reach the worker processes of their cases only
    assert all(r["check"]["malloc_env"] == {"MALLOC_MMAP_THRESHOLD_": None, "MALLOC_TRIM_THRESHOLD_": None}
               for c in (cases[0], cases[3]) for r in c["results"].values())
    assert all(r["check"]["malloc_env"] == {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
               for c in cases[1:3] for r in c["results"].values())
    # neither row runs with the command line's allocator settings (pointstn.allocator)
    assert all(r["allocator"] == "glibc (POINTSTN_ALLOCATOR)" for c in (cases[0], cases[3]) for r in c["results"].values())
    assert all(r["allocator"] == "glibc (set by the environment: MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_)"
               for c in cases[1:3] for r in c["results"].values())
    assert [[r["check"]["recompute"] for r in c["results"].values()] for c in cases] == [
        [False, False], [False, False], [True, True], [False, False]]
    assert "<!-- bench:decoder:begin -->" in (tmp_path / "B.md").read_text()
