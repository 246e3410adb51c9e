"""Checkpoints: round trip, atomic replacement, refusal of pickled code, truncation, strict keys, RNG."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch

from pointstn.config import ExperimentConfig
from pointstn.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_round_trip_keeps_weights_config_and_state(tmp_path):
    model, config = tiny(), ExperimentConfig(name="ckpt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    path = tmp_path / "last.pt"
    save_checkpoint(path, model=model, config=config, step=17, optimizer=optimizer.state_dict(), epoch=2)
    loaded = load_checkpoint(path)
    assert loaded.config == config and loaded.step == 17 and loaded.state["epoch"] == 2
    fresh = tiny()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    load_model_state(fresh, loaded)
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    restored = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    restored.load_state_dict(loaded.state["optimizer"])
    assert restored.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "pointstn-checkpoint", "model": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)
    assert not marker.exists()
    with open(tmp_path / "raw.pt", "wb") as handle:  # a bare pickle, not even a torch zip
        pickle.dump(Payload(), handle)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "raw.pt")
    assert not marker.exists()


def test_truncated_missing_and_foreign_files(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, model=tiny(), config=ExperimentConfig(), step=1)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="is not a pointstn checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, model=tiny(), config=ExperimentConfig(), step=5)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(Exception, match="No space left|space"):
        save_checkpoint(path, model=tiny(), config=ExperimentConfig(), step=6)
    assert path.read_bytes() == before and load_checkpoint(path).step == 5
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_strict_loading_lists_every_mismatch(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, model=tiny(), config=ExperimentConfig(), step=1)
    other = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2), torch.nn.Linear(2, 2))
    with pytest.raises(CheckpointError) as info:
        load_model_state(other, load_checkpoint(path))
    message = str(info.value)
    assert "missing: 3.bias, 3.weight" in message
    assert "shape mismatch: 0.bias, 0.weight, 2.weight" in message


def test_rng_state_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = tmp_path / "rng.pt"
    save_checkpoint(path, model=tiny(), config=ExperimentConfig(), step=0, rng=rng_state())
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(path).state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
