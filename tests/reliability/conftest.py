"""Shared helpers of the reliability tests: the CLI in this process, a small checkpoint, a dataset copy."""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from pointstn.cli.main import main


@dataclass(frozen=True)
class CliRun:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if ": error: " in line]


def run_cli(*argv: str) -> CliRun:
    """`pointstn <argv>` in this process, output captured (no spconv/torch import per call)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return CliRun(code=code, stdout=out.getvalue(), stderr=err.getvalue())


def assert_one_line_error(result: CliRun, *, code: int, contains: str) -> str:
    """Exactly one `pointstn <cmd>: error:` line containing `contains`, no traceback, exit `code`."""
    assert result.code == code, (result.code, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.error_lines
    assert len(lines) == 1 and contains in lines[0], result.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised dense-decoder model (no spconv needed) saved as a checkpoint."""
    from pointstn.engine.checkpoint import save_checkpoint
    from pointstn.models.build import build_model
    from tests.inference.conftest import small_config

    config = small_config()
    torch.manual_seed(0)
    model = build_model(config).eval()
    path = tmp_path_factory.mktemp("reliability_ckpt") / "small.pt"
    save_checkpoint(path, model=model, config=config, step=3)
    return path


@pytest.fixture
def dataset_copy(tiny_dataset, tmp_path) -> Path:
    """A private copy of the session's tiny dataset, free to damage."""
    copy = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, copy)
    return copy
