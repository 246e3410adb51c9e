"""Multi-process training on CPU (gloo): torchrun with 2 processes against the single-process run, and the
survivors of a dead or hung worker.

Each process runs `LAUNCHER`, a test-only wrapper around `pointstn train` that records what its rank did:
the training items it loaded (in order), every file it opened for writing or renamed into the run folder
(a `sys.addaudithook` on "open"/"os.rename"), and its final weights. It can also make rank 1 die
(`os._exit`) or hang at its n-th loss computation. No product code carries a debug hook.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pointstn.data.dataset import PreparedDataset
from pointstn.engine.checkpoint import load_checkpoint
from pointstn.engine.distributed import TIMEOUT_VARIABLE, is_communication_error, timeout_from_environment
from pointstn.errors import PointstnError
from pointstn.models.retrieval_prior import RetrievalPrior
from tests.engine.test_trainer import REPO, SMOKE, history, smoke_overrides, train_cli

WORLD = 2
STEPS = 4
DDP_RTOL = 1e-5  # 2 x batch 1 vs batch 2: same maths, other summation order (measured ~1e-7 over 4 steps)
DDP_WEIGHT_ATOL = 1e-5  # measured 2e-6 after 4 AdamW steps at lr 1e-3
SHORT_TIMEOUT_S = 8  # POINTSTN_DIST_TIMEOUT in the hung-worker test (rank 0 validates in well under 1 s)
WAIT_S = 120  # the longest a test waits for a process on a loaded 2-core machine

LAUNCHER = """import json, os, sys, time

import torch

import pointstn.engine.trainer as trainer
from pointstn.cli.main import main
from pointstn.data.dataset import PreparedDataset

record_dir, run_dir, argv = sys.argv[1], os.path.realpath(sys.argv[2]), sys.argv[3:]
rank = int(os.environ.get("RANK", "0"))
die_at, hang_at = int(os.environ.get("TEST_DIE_AT_CALL", "0")), int(os.environ.get("TEST_HANG_AT_CALL", "0"))
writes, items, models = set(), [], []


def inside_run_dir(path):
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False
    path = os.path.realpath(os.fsdecode(path))
    return path == run_dir or path.startswith(run_dir + os.sep)


def audit(event, args):
    if event == "open" and inside_run_dir(args[0]):
        mode, flags = args[1], args[2]
        if (mode and any(c in mode for c in "wax+")) or (not mode and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
            writes.add(os.path.relpath(os.path.realpath(os.fsdecode(args[0])), run_dir))
    elif event == "os.rename" and inside_run_dir(args[1]):
        writes.add(os.path.relpath(os.path.realpath(os.fsdecode(args[1])), run_dir))


sys.addaudithook(audit)
original_getitem = PreparedDataset.__getitem__


def getitem(self, item):
    if self.split == "train":
        items.append(int(item))
    return original_getitem(self, item)


PreparedDataset.__getitem__ = getitem
original_build, original_loss, calls = trainer.build_model, trainer.reconstruction_loss, []


def build_model(config):
    models.append(original_build(config))
    return models[-1]


def loss(*args, **kwargs):
    calls.append(1)
    if rank == 1 and len(calls) == die_at:
        os._exit(17)
    if rank == 1 and len(calls) == hang_at:
        time.sleep(600)
    return original_loss(*args, **kwargs)


trainer.build_model, trainer.reconstruction_loss = build_model, loss
code = main(["train", *argv])
torch.save(models[0].state_dict(), os.path.join(record_dir, f"model{rank}.pt"))
with open(os.path.join(record_dir, f"rank{rank}.json"), "w") as f:
    json.dump({"code": code, "writes": sorted(writes), "items": items,
               "not_broadcast": sorted(getattr(models[0], "_ddp_params_and_buffers_to_ignore", []))}, f)
sys.exit(code)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_overrides(root: Path) -> list[str]:
    return smoke_overrides(root, "model.decoder.kind=none", f"train.max_steps={STEPS}")


def launcher_command(tmp_path: Path, run_dir: Path, root: Path, overrides: list[str] | None = None) -> list[str]:
    """The launcher's argv for a run of the smoke config (`overrides`, default `ddp_overrides(root)`)."""
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER)
    (tmp_path / "records").mkdir()
    overrides = ddp_overrides(root) if overrides is None else overrides
    return [str(script), str(tmp_path / "records"), str(run_dir), str(SMOKE), *overrides, "--out",
            str(run_dir), "--no-progress"]


def record(tmp_path: Path, rank: int) -> dict:
    return json.loads((tmp_path / "records" / f"rank{rank}.json").read_text())


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


# --- helpers ------------------------------------------------------------------------------------------

def test_timeout_comes_from_the_environment_and_bad_values_are_refused(monkeypatch):
    monkeypatch.delenv(TIMEOUT_VARIABLE, raising=False)
    assert timeout_from_environment() == datetime.timedelta(minutes=10)
    monkeypatch.setenv(TIMEOUT_VARIABLE, "2.5")
    assert timeout_from_environment() == datetime.timedelta(seconds=2.5)
    for bad in ("0", "-3", "soon", "nan", "inf"):
        monkeypatch.setenv(TIMEOUT_VARIABLE, bad)
        with pytest.raises(PointstnError, match=f"{TIMEOUT_VARIABLE}='{bad}' must be a positive number of seconds"):
            timeout_from_environment()


def test_communication_errors_are_told_apart_from_other_runtime_errors():
    assert is_communication_error(torch.distributed.DistBackendError("NCCL communicator was aborted"))
    assert is_communication_error(RuntimeError("[../gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer"))
    assert is_communication_error(RuntimeError("Timed out waiting 5000ms for recv operation to complete"))
    assert is_communication_error(RuntimeError("Application timeout caused pair closure"))
    assert not is_communication_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"))
    assert not is_communication_error(ValueError("connection reset"))


# --- torchrun ------------------------------------------------------------------------------------------

def test_torchrun_two_processes_equal_the_single_process_run(tiny_dataset, tmp_path, monkeypatch):
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_addr",
               "127.0.0.1", "--master_port", str(free_port()), *launcher_command(tmp_path, run_dir, tiny_dataset)]
    done = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True,
                          timeout=WAIT_S, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [record(tmp_path, r) for r in range(WORLD)]
    assert [r["code"] for r in ranks] == [0, 0]
    # only rank 0 prints the summary and writes files
    best = load_checkpoint(run_dir / "best.pt").state["best_value"]
    summaries = [line for line in done.stdout.splitlines() if "at step" in line and "best" in line]
    assert summaries == [f"finished at step {STEPS}; best f@1% = {best:.4f}; run folder {run_dir}"]
    assert ranks[1]["writes"] == []
    written = {name for name in ranks[0]["writes"] if not name.startswith(".")}
    assert written == {"config.yaml", "log.txt", "history.json", "history.csv", "curves.png", "last.pt", "best.pt"}
    # every rank ends with the same weights, which are the ones in last.pt
    weights = [torch.load(tmp_path / "records" / f"model{r}.pt", weights_only=True) for r in range(WORLD)]
    saved = load_checkpoint(run_dir / "last.pt")
    assert saved.step == STEPS
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]) and torch.equal(value, saved.model_state[key]), key

    # the single-process run of the same config: its global batches are the union of the ranks' halves
    single_items: list[int] = []
    original = PreparedDataset.__getitem__

    def recording_getitem(self, item):
        if self.split == "train":
            single_items.append(int(item))
        return original(self, item)

    monkeypatch.setattr(PreparedDataset, "__getitem__", recording_getitem)
    single_dir = tmp_path / "single"
    assert train_cli(single_dir, ddp_overrides(tiny_dataset)).code == 0
    per_rank = 2 // WORLD
    assert len(single_items) == 2 * STEPS and all(len(r["items"]) == per_rank * STEPS for r in ranks)
    for step in range(STEPS):
        union = [i for r in ranks for i in r["items"][step * per_rank:(step + 1) * per_rank]]
        assert union == single_items[step * 2:(step + 1) * 2], step
    # ... and it computes the same losses, metrics and weights (gradients averaged over the ranks)
    ddp_rows, single_rows = history(run_dir), history(single_dir)
    assert [(r["step"], r["phase"]) for r in ddp_rows] == [(r["step"], r["phase"]) for r in single_rows]
    for ddp_row, single_row in zip(ddp_rows, single_rows, strict=True):
        assert set(ddp_row) == set(single_row)
        for key in set(single_row) - {"step", "phase", "images_per_s"}:
            assert ddp_row[key] == pytest.approx(single_row[key], rel=DDP_RTOL, abs=1e-9), (ddp_row["step"], key)
    single_weights = load_checkpoint(single_dir / "last.pt").model_state
    for key, value in saved.model_state.items():
        torch.testing.assert_close(value, single_weights[key], rtol=0, atol=DDP_WEIGHT_ATOL, msg=key)


def test_torchrun_with_the_retrieval_prior_keeps_one_memory_on_every_rank(tiny_dataset, tmp_path):
    """The prior's memory is excluded from DDP's buffer broadcast: every rank fits the same one from the
    train split, the ranks end with equal weights and memory, and last.pt holds them."""
    run_dir = tmp_path / "ddp"
    overrides = smoke_overrides(tiny_dataset, "model.decoder.kind=sparse", "model.retrieval_prior.enabled=true",
                                "model.retrieval_prior.points=64", "train.max_steps=2")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_addr",
               "127.0.0.1", "--master_port", str(free_port()),
               *launcher_command(tmp_path, run_dir, tiny_dataset, overrides)]
    done = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True,
                          timeout=WAIT_S, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    weights = [torch.load(tmp_path / "records" / f"model{r}.pt", weights_only=True) for r in range(WORLD)]
    saved = load_checkpoint(run_dir / "last.pt").model_state
    memory = sorted(k for k in saved if k.startswith("retrieval_prior."))
    assert all(record(tmp_path, r)["not_broadcast"] == memory for r in range(WORLD))  # ~90 MB at full scale
    fresh = RetrievalPrior(points=64).fit(PreparedDataset(tiny_dataset, split="train", num_points=64)).state_dict()
    assert sorted(f"retrieval_prior.{name}" for name in fresh) == memory
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]) and torch.equal(value, saved[key]), key
    for name, value in fresh.items():
        assert torch.equal(saved[f"retrieval_prior.{name}"], value), name


# --- a dead or hung worker -------------------------------------------------------------------------------

@pytest.mark.parametrize("failure", ["TEST_DIE_AT_CALL", "TEST_HANG_AT_CALL"])
def test_the_survivor_of_a_dead_or_hung_worker_exits_with_one_clear_line(tiny_dataset, tmp_path, failure):
    """Two processes started by hand (no torchrun agent to clean up): rank 1 dies (os._exit) or hangs at its
    2nd loss. Rank 0 must leave with exit code 2 and one error line (after its step-1 log lines), at once when
    the peer died (connection reset) or after POINTSTN_DIST_TIMEOUT when it hangs."""
    run_dir = tmp_path / "run"
    command = launcher_command(tmp_path, run_dir, tiny_dataset)
    port = str(free_port())
    processes = [
        subprocess.Popen([sys.executable, *command], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=environment(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                                                    MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                                                    **{TIMEOUT_VARIABLE: str(SHORT_TIMEOUT_S), failure: "2"}))
        for rank in range(WORLD)
    ]
    try:
        _, stderr = processes[0].communicate(timeout=WAIT_S)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate()
    assert processes[0].returncode == 2, stderr[-3000:]
    if failure == "TEST_DIE_AT_CALL":
        assert processes[1].returncode == 17
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("pointstn train: error:")]
    assert len(lines) == 1 and stderr.strip().endswith(lines[0]), stderr[-3000:]  # the last line; logging before
    assert lines[0].startswith("pointstn train: error: process 0 of 2: another training process died or "
                               "stopped responding (")
    # gloo words a timeout either way: "Timed out waiting 8000ms for recv ..." or "Application timeout caused
    # pair closure"; a dead peer is "Connection reset by peer" / "Connection closed by peer"
    timed_out = "timed out" in lines[0].lower() or "timeout" in lines[0].lower()
    assert timed_out == (failure == "TEST_HANG_AT_CALL"), lines[0]
    assert lines[0].endswith("; no checkpoint was written") and not (run_dir / "last.pt").exists()
    assert record(tmp_path, 0)["code"] == 2 and [r["step"] for r in history(run_dir)] == [1]
