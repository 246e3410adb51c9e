"""The profiler report runs on a tiny config and attributes time to the model's stages."""

from __future__ import annotations

from pathlib import Path

from pointstn.bench.profile import STAGES, main, markdown, profile_config

REPO = Path(__file__).resolve().parents[2]


def test_profile_attributes_time_to_stages_and_writes_its_section(tmp_path):
    report = profile_config(REPO / "configs" / "smoke.yaml", steps=1, warmup=1, threads=1, top=5)
    for part in ("train", "infer"):
        stages = dict(report[part]["stages"])
        assert set(stages) == set(STAGES), stages  # every stage of the sparse model ran inside its scope
        assert all(ms > 0 for ms in stages.values())
        assert sum(stages.values()) <= report[part]["wall_ms"] * 1.05  # forward stages fit in the whole call
        assert len(report[part]["ops"]) == 5 and all(ms >= 0 for _, ms, _ in report[part]["ops"])
    text = markdown(report, command="cmd", date="2026-01-01")
    assert "### training step" in text and "| decoder |" in text
    out = tmp_path / "BENCH.md"
    assert main([str(REPO / "configs" / "smoke.yaml"), "--steps", "1", "--threads", "1", "--out", str(out)]) == 0
    body = out.read_text()
    assert body.count("## Profile: a training step") == 1 and "| backbone |" in body
