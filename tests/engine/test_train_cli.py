"""`pointstn train` as a user meets it: a SIGTERM to the whole job, and the refusals that protect a run folder.

The stop test runs a real subprocess (with a DataLoader worker, signalled through its process group like a
terminal or a batch system does); the refusals run in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pointstn.cli.main import main
from pointstn.engine.checkpoint import load_checkpoint
from tests.engine.test_trainer import REPO, SMOKE, rows, smoke_overrides, train_cli

STOP_TIMEOUT_S = 60  # generous for a loaded 2-core machine; a clean stop takes ~3 s


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative name -> content)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_dataset) -> Path:
    """A 2-step psgn-baseline run folder (config.yaml, log, history, curves, last.pt, best.pt)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = train_cli(run_dir, smoke_overrides(tiny_dataset, "model.decoder.kind=none", "train.max_steps=2",
                                                "train.val_every=2", "train.checkpoint_every=2"))
    assert result.code == 0, result.stderr
    assert {"config.yaml", "log.txt", "history.json", "history.csv", "curves.png", "last.pt", "best.pt"} \
        <= set(snapshot(run_dir))
    return run_dir


def test_sigterm_to_the_job_saves_last_pt_exits_0_and_the_run_resumes(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    overrides = smoke_overrides(tiny_dataset, "model.decoder.kind=none", "train.max_steps=1000",
                                "train.val_every=1000", "train.checkpoint_every=1000", "data.num_workers=1")
    process = subprocess.Popen(
        [sys.executable, "-m", "pointstn.cli.main", "train", str(SMOKE), *overrides, "--out", str(run_dir),
         "--no-progress"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while not ((run_dir / "log.txt").is_file() and "step 2 total=" in (run_dir / "log.txt").read_text()):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "training never reached step 2"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGTERM)  # the main process and its DataLoader worker, like `kill -- -PGID`
        stdout, stderr = process.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    last_line = stdout.strip().splitlines()[-1]
    assert last_line.startswith("signal at step ")
    reached = int(last_line.split()[3].rstrip(";"))
    assert 2 <= reached < 1000
    checkpoint = load_checkpoint(run_dir / "last.pt")
    assert checkpoint.step == reached and max(rows(run_dir, "train")) == reached
    assert f"signal at step {reached}" in (run_dir / "log.txt").read_text()

    # more steps is a resumable change; the run continues where it stopped
    more_steps = [o.replace("max_steps=1000", f"max_steps={reached + 2}") for o in overrides]
    resumed = train_cli(run_dir, more_steps, "--resume")
    assert resumed.code == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1].startswith(f"finished at step {reached + 2};")
    assert load_checkpoint(run_dir / "last.pt").step == reached + 2
    assert sorted(rows(run_dir, "train")) == list(range(1, reached + 3))


def test_resume_with_another_config_lists_the_keys_and_changes_nothing(finished_run, tiny_dataset, tmp_path):
    before = snapshot(finished_run)
    overrides = smoke_overrides(tiny_dataset, "model.decoder.kind=none", "train.max_steps=2", "train.val_every=2",
                                "train.checkpoint_every=2", "model.decoder.resolution=32", "train.lr=0.01")
    result = train_cli(finished_run, overrides, "--resume")
    assert result.code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == (f"pointstn train: error: {finished_run / 'last.pt'} was trained with another config "
                        "(differs in: model.decoder.resolution, train.lr); resume with the same config or start a "
                        "new run")
    assert snapshot(finished_run) == before


def test_resume_without_a_checkpoint_fails_and_creates_nothing(tiny_dataset, tmp_path):
    run_dir = tmp_path / "empty"
    result = train_cli(run_dir, smoke_overrides(tiny_dataset), "--resume")
    assert result.code == 2
    assert result.stderr.strip() == \
        f"pointstn train: error: nothing to resume: {run_dir / 'last.pt'} does not exist"
    assert not run_dir.exists()
    missing = tmp_path / "elsewhere.pt"
    result = train_cli(run_dir, smoke_overrides(tiny_dataset), "--resume", str(missing))
    assert result.code == 2 and f"nothing to resume: {missing} does not exist" in result.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize("held", [("last.pt", "best.pt"), ("best.pt",)])
def test_starting_into_a_folder_that_holds_a_run_fails_and_changes_nothing(finished_run, tiny_dataset, tmp_path,
                                                                            held):
    """A folder with only best.pt (killed after a validation, before the first last.pt) holds a run too."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name, content in snapshot(finished_run).items():
        if name.endswith(".pt") and name not in held:
            continue
        (run_dir / name).write_bytes(content)
    before = snapshot(run_dir)
    result = train_cli(run_dir, smoke_overrides(tiny_dataset, "model.decoder.kind=none"))
    assert result.code == 2
    assert result.stderr.strip() == (f"pointstn train: error: run folder {run_dir} already holds a run "
                                     f"({', '.join(held)}); continue it with --resume or pick another --out")
    assert snapshot(run_dir) == before


def test_a_non_positive_time_limit_is_refused(tiny_dataset, tmp_path):
    result = train_cli(tmp_path / "run", smoke_overrides(tiny_dataset), "--time-limit", "0")
    assert result.code == 2
    assert "--time-limit must be a positive number of minutes, got 0.0" in result.stderr
    assert not (tmp_path / "run").exists()


# --- --init: a new run from a checkpoint's weights ---------------------------------------------------------

def test_init_starts_a_new_run_from_the_checkpoints_weights(finished_run, tiny_dataset, tmp_path):
    """With a learning rate of 1e-8 one step cannot move the weights measurably: the new run's last.pt holds the
    init checkpoint's weights (not a fresh initialization's), at its own step 1 with its own history."""
    source = load_checkpoint(finished_run / "last.pt")
    run_dir = tmp_path / "run"
    overrides = smoke_overrides(tiny_dataset, "model.decoder.kind=none", "train.max_steps=1", "train.val_every=1",
                                "train.checkpoint_every=1", "train.lr=1e-8", "train.seed=7")
    result = train_cli(run_dir, overrides, "--init", str(finished_run / "last.pt"))
    assert result.code == 0, result.stderr
    started = load_checkpoint(run_dir / "last.pt")
    assert started.step == 1 and sorted(rows(run_dir, "train")) == [1]
    moved = {key: (started.model_state[key] - value).abs().max().item() for key, value in source.model_state.items()
             if value.is_floating_point()}
    assert max(moved.values()) < 1e-6, max(moved, key=moved.get)
    fresh = tmp_path / "fresh"
    assert train_cli(fresh, overrides).code == 0
    assert any(not torch.equal(load_checkpoint(fresh / "last.pt").model_state[key], value)
               for key, value in source.model_state.items())
    log = (run_dir / "log.txt").read_text()
    assert f"starting from the weights of {finished_run / 'last.pt'} (its step 2)" in log


def test_init_from_another_models_checkpoint_lists_the_keys_and_creates_nothing(finished_run, tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    result = train_cli(run_dir, smoke_overrides(tiny_dataset, "model.decoder.kind=sparse"),
                       "--init", str(finished_run / "last.pt"))
    assert result.code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pointstn train: error: {finished_run / 'last.pt'} does not "
                                                   "match this model (missing: decoder.")
    assert not run_dir.exists()


def test_init_refuses_a_missing_file_and_resume_at_the_same_time(finished_run, tiny_dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    missing = tmp_path / "nothing.pt"
    result = train_cli(run_dir, smoke_overrides(tiny_dataset), "--init", str(missing))
    assert result.code == 2
    assert result.stderr.strip() == f"pointstn train: error: nothing to start from: {missing} does not exist"
    with pytest.raises(SystemExit) as stop:
        main(["train", str(SMOKE), *smoke_overrides(tiny_dataset), "--out", str(run_dir),
              "--init", str(finished_run / "last.pt"), "--resume"])
    assert stop.value.code == 2 and "argument --resume: not allowed with argument --init" in capsys.readouterr().err
    assert not run_dir.exists()
