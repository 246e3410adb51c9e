"""The command line: subcommands, one-line user errors with exit 2, scripts runnable from anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pointstn.cli.main import COMMANDS, EXIT_USER_ERROR, main
from pointstn.config import ExperimentConfig, load_config

REPO = Path(__file__).resolve().parents[2]
REQUIRED_COMMANDS = {"prepare-data", "train", "test", "predict", "benchmark"}


def test_every_required_subcommand_exists():
    assert REQUIRED_COMMANDS <= set(COMMANDS)


def test_config_command_prints_resolved_yaml(tmp_path, capsys):
    code = main(["config", str(REPO / "configs" / "smoke.yaml"), "train.lr=0.125"])
    assert code == 0
    out_file = tmp_path / "resolved.yaml"
    out_file.write_text(capsys.readouterr().out)
    config = load_config(out_file, ExperimentConfig)
    assert config.train.lr == 0.125 and config.name == "smoke"


def test_config_command_writes_file(tmp_path):
    out = tmp_path / "resolved.yaml"
    assert main(["config", str(REPO / "configs" / "base.yaml"), "--out", str(out)]) == 0
    assert load_config(out, ExperimentConfig) == load_config(REPO / "configs" / "base.yaml", ExperimentConfig)


def test_user_error_is_one_line_with_exit_2(tmp_path, capsys):
    code = main(["config", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR
    assert err.count("\n") == 1 and "config file not found" in err and "Traceback" not in err


def test_debug_flag_shows_the_traceback(tmp_path):
    from pointstn.config import ConfigError

    with pytest.raises(ConfigError):
        main(["config", "--debug", str(tmp_path / "missing.yaml")])


def _run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / script), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_scripts_run_from_any_directory(tmp_path):
    result = _run_script("benchmark.py", "--suite", "nonsense", cwd=tmp_path)
    assert result.returncode == EXIT_USER_ERROR
    assert result.stderr.strip() == "pointstn benchmark: error: unknown benchmark suite 'nonsense'; valid: all, chamfer, decoder, model, data, predict, scaling, memory"


def test_overrides_may_follow_options(capsys):
    from pointstn.cli.main import main

    config = str(REPO / "configs" / "smoke.yaml")
    assert main(["config", config, "--kind", "experiment", "train.lr=0.0005"]) == 0
    assert "lr: 0.0005" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["config", config, "--kind", "experiment", "--bogus-option"])
    assert exc.value.code == 2 and "unrecognized arguments: --bogus-option" in capsys.readouterr().err


def test_benchmark_refuses_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    from pointstn.cli.main import main

    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["benchmark", "--suite", "predict", "--checkpoint", str(bad)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("pointstn benchmark: error: ") and str(bad) in err and "\n" not in err
