"""pointstn.allocator: the choice from the environment, and the effect on page faults in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pointstn import PointstnError
from pointstn.allocator import GLIBC_VARIABLES, allocator_choice, tune_allocator
from pointstn.cli.main import main

REPO = Path(__file__).resolve().parents[1]

# 20 rounds (after two warm-up rounds) of the backbone stem's first operations on a 128 x 128 image
# (a 2 MiB conv output, group norm, ReLU, pooling); prints what tune_allocator returned and the
# minor page faults of the 20 rounds
PROBE = """
import json, resource
from pointstn.allocator import tune_allocator
state = tune_allocator()
import torch
import torch.nn.functional as F
torch.set_num_threads(1)
x, w = torch.rand(1, 3, 128, 128), torch.randn(32, 3, 3, 3)
def rounds(n):
    for _ in range(n):
        F.avg_pool2d(F.relu(F.group_norm(F.conv2d(x, w, padding=1), 8)), 2)
rounds(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(20)
print(json.dumps({"state": state, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in (*GLIBC_VARIABLES, "POINTSTN_ALLOCATOR")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_choice_from_the_environment():
    assert allocator_choice({}) == "tuned"
    assert allocator_choice({"POINTSTN_ALLOCATOR": "glibc"}) == "glibc"
    assert allocator_choice({"POINTSTN_ALLOCATOR": " Tuned "}) == "tuned"
    with pytest.raises(PointstnError, match="POINTSTN_ALLOCATOR must be one of tuned, glibc"):
        allocator_choice({"POINTSTN_ALLOCATOR": "jemalloc"})


def test_environment_settings_are_left_alone():
    assert tune_allocator({"POINTSTN_ALLOCATOR": "glibc"}) in ("glibc (POINTSTN_ALLOCATOR)", "not glibc")
    state = tune_allocator({"MALLOC_TRIM_THRESHOLD_": "65536", "GLIBC_TUNABLES": "x"})
    assert state in ("glibc (set by the environment: MALLOC_TRIM_THRESHOLD_, GLIBC_TUNABLES)", "not glibc")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings are Linux-only")
def test_tuned_process_reuses_freed_blocks_instead_of_faulting_them_in_again():
    tuned, default = _probe(), _probe(POINTSTN_ALLOCATOR="glibc")
    if tuned["state"] == "not glibc":
        pytest.skip("not a glibc system")
    assert tuned["state"] == "tuned" and default["state"] == "glibc (POINTSTN_ALLOCATOR)"
    # glibc's default hands blocks back to the kernel and faults them in again (measured: 5,857-17,065
    # faults in 20 rounds); tuned, the heap keeps them (measured: 0, 512 or 1,024: up to two 2 MiB growths)
    assert default["faults"] >= 4096, (default, tuned)
    assert tuned["faults"] <= 2048, (default, tuned)


def test_command_line_reports_a_bad_setting_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("POINTSTN_ALLOCATOR", "fast")
    assert main(["config", str(REPO / "configs" / "base.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pointstn config: error: POINTSTN_ALLOCATOR must be one of tuned, glibc, got 'fast'"]
