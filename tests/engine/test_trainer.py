"""The training loop on the tiny dataset: smoke configs end to end, exact resume, NaN stops, time limit.

Runs go through `pointstn train` in this process (spconv is imported once per session). The smoke
config with `smoke_overrides(...)` trains 6 steps of batch 2 over the 9 training views (4 steps per epoch, so
a run crosses an epoch boundary), validating and checkpointing every 3 steps.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from pointstn.cli.main import main
from pointstn.config import ExperimentConfig, dump_config, load_config
from pointstn.data.dataset import PreparedDataset
from pointstn.engine import trainer
from pointstn.engine.checkpoint import load_checkpoint, model_from_checkpoint
from pointstn.engine.trainer import (
    RESUMABLE,
    check_resumable,
    epoch_batches,
    learning_rate_factor,
)
from pointstn.errors import PointstnError
from pointstn.models import losses
from pointstn.models.build import build_model
from pointstn.models.retrieval_prior import RetrievalPrior

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
MAX_STEPS = 6
LOSS_RTOL = 1e-6  # float32, same ops in the same order (a resumed run was measured bit-identical here)
NOT_COMPARED = ("images_per_s",)  # wall-clock throughput


def smoke_overrides(root: Path, *extra: str) -> list[str]:
    """The overrides that make the smoke config train 6 fast steps on the tiny dataset at `root`."""
    return [f"train.max_steps={MAX_STEPS}", "train.batch_size=2", "train.val_every=3", "train.checkpoint_every=3",
            "train.log_every=1", "data.num_workers=0", f"data.root={root}", "data.num_gt_points=512",
            "eval.num_gt_points=512", *extra]


@dataclass(frozen=True)
class CliRun:
    code: int
    stdout: str
    stderr: str


def run_cli(*argv: str) -> CliRun:
    """`pointstn <argv>` in this process, its output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return CliRun(code=code, stdout=out.getvalue(), stderr=err.getvalue())


def train_cli(run_dir: Path, overrides: list[str], *flags: str) -> CliRun:
    return run_cli("train", str(SMOKE), *overrides, "--out", str(run_dir), "--no-progress", *flags)


def history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "history.json").read_text())


def rows(run_dir: Path, phase: str) -> dict[int, dict]:
    return {r["step"]: r for r in history(run_dir) if r["phase"] == phase}


def assert_rows_match(actual: dict[int, dict], expected: dict[int, dict]) -> None:
    assert sorted(actual) == sorted(expected)
    for step, row in expected.items():
        keys = sorted(set(row) - set(NOT_COMPARED))
        assert sorted(set(actual[step]) - set(NOT_COMPARED)) == keys, step
        for key in keys:
            if isinstance(row[key], float):
                assert actual[step][key] == pytest.approx(row[key], rel=LOSS_RTOL, abs=1e-12), (step, key)
            else:
                assert actual[step][key] == row[key], (step, key)


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = load_checkpoint(a).model_state, load_checkpoint(b).model_state
    assert sorted(left) == sorted(right)
    for key in left:
        torch.testing.assert_close(left[key], right[key], rtol=LOSS_RTOL, atol=1e-7, msg=key)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, tiny_dataset):
    """kind -> (run folder, CliRun) of an uninterrupted 6-step run with model.decoder.kind=kind (made once)."""
    done: dict[str, tuple[Path, CliRun]] = {}

    def get(kind: str) -> tuple[Path, CliRun]:
        if kind not in done:
            run_dir = tmp_path_factory.mktemp(f"smoke_{kind}") / "run"
            result = train_cli(run_dir, smoke_overrides(tiny_dataset, f"model.decoder.kind={kind}"))
            assert result.code == 0, result.stderr
            done[kind] = (run_dir, result)
        return done[kind]

    return get


# --- pure functions ---------------------------------------------------------------------------------

def test_learning_rate_factor_warms_up_linearly_then_decays_by_cosine_to_five_percent():
    warmup, total = 4, 20
    factors = [learning_rate_factor(s, warmup=warmup, total=total) for s in range(total + 3)]
    assert factors[:warmup] == pytest.approx([1 / 4, 2 / 4, 3 / 4, 4 / 4][:warmup])
    assert factors[warmup] == pytest.approx(1.0)
    # half-way through the decay: 0.05 + 0.95 * 0.5 * (1 + cos(pi / 2))
    assert factors[(warmup + total) // 2] == pytest.approx(0.05 + 0.95 * 0.5)
    assert factors[total] == pytest.approx(0.05) and factors[total + 2] == pytest.approx(0.05)
    decay = factors[warmup:total + 1]
    assert all(a > b for a, b in itertools.pairwise(decay))
    assert learning_rate_factor(0, warmup=0, total=10) == pytest.approx(1.0)


@pytest.mark.parametrize("num_items,batch_size", [(9, 2), (27, 4), (16, 8)])
def test_epoch_batches_split_the_single_process_batches_between_ranks(num_items, batch_size):
    for epoch in range(3):
        single = epoch_batches(num_items, batch_size=batch_size, seed=5, epoch=epoch, rank=0, world=1)
        assert len(single) == num_items // batch_size  # the incomplete last batch is dropped
        flat = [i for b in single for i in b]
        assert len(set(flat)) == len(flat) and all(0 <= i < num_items for i in flat)
        for world in (2, batch_size):
            if batch_size % world:
                continue
            per_rank = [epoch_batches(num_items, batch_size=batch_size, seed=5, epoch=epoch, rank=r, world=world)
                        for r in range(world)]
            for k, batch in enumerate(single):
                assert [i for r in range(world) for i in per_rank[r][k]] == batch
    orders = {tuple(map(tuple, epoch_batches(27, batch_size=4, seed=5, epoch=e, rank=0, world=1))) for e in range(4)}
    assert len(orders) == 4  # a new permutation every epoch
    assert epoch_batches(27, batch_size=4, seed=6, epoch=0, rank=0, world=1) != \
        epoch_batches(27, batch_size=4, seed=5, epoch=0, rank=0, world=1)


def test_check_resumable_lists_every_differing_key_and_allows_the_resumable_ones(tmp_path):
    saved = load_config(SMOKE, ExperimentConfig)
    allowed = load_config(SMOKE, ExperimentConfig, ["train.max_steps=99", "train.time_limit_minutes=5",
                                                    "train.threads=1", "data.num_workers=3", f"output_dir={tmp_path}"])
    assert {"train.max_steps", "train.time_limit_minutes", "train.threads", "data.num_workers", "output_dir"} \
        == set(RESUMABLE)
    check_resumable(saved, allowed, tmp_path / "last.pt")
    other = load_config(SMOKE, ExperimentConfig, ["model.decoder.resolution=32", "train.lr=0.01", "train.max_steps=9"])
    with pytest.raises(PointstnError) as info:
        check_resumable(saved, other, tmp_path / "last.pt")
    message = str(info.value)
    assert "model.decoder.resolution, train.lr" in message and "max_steps" not in message
    assert str(tmp_path / "last.pt") in message


# --- 1. smoke configs end to end --------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sparse", "none"])
def test_smoke_config_trains_end_to_end_and_fills_the_run_folder(smoke_runs, tiny_dataset, kind):
    run_dir, result = smoke_runs(kind)
    overrides = smoke_overrides(tiny_dataset, f"model.decoder.kind={kind}")
    resolved = load_config(SMOKE, ExperimentConfig, overrides)
    assert (run_dir / "config.yaml").read_text() == dump_config(resolved)
    assert load_config(run_dir / "config.yaml", ExperimentConfig) == resolved

    train_rows, val_rows = rows(run_dir, "train"), rows(run_dir, "val")
    assert sorted(train_rows) == list(range(1, MAX_STEPS + 1)) and sorted(val_rows) == [3, 6]
    fine = {"chamfer_fine_canonical", "chamfer_fine_camera", "occupancy"}
    for step, row in train_rows.items():
        assert all(math.isfinite(v) for k, v in row.items() if k != "phase")
        # the rate step `step` used: the schedule at its 0-based index
        assert row["lr"] == pytest.approx(resolved.train.lr * learning_rate_factor(
            step - 1, warmup=resolved.train.warmup_steps, total=MAX_STEPS), rel=1e-9)
        assert {"total", "chamfer_coarse_canonical", "chamfer_coarse_camera", "rotation_deg"} <= set(row)
        assert fine <= set(row) if kind == "sparse" else not (fine & set(row))
    for row in val_rows.values():
        assert {"cd_l2", "cd_l1", "f@1%", "f@2%"} <= set(row)
    with open(run_dir / "history.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(int(r["step"]), r["phase"]) for r in table] == [(r["step"], r["phase"]) for r in history(run_dir)]
    for csv_row, json_row in zip(table, history(run_dir), strict=True):
        assert all(float(csv_row[k]) == v for k, v in json_row.items() if k not in ("step", "phase"))

    log = (run_dir / "log.txt").read_text()
    for step in range(1, MAX_STEPS + 1):
        assert f"step {step} total=" in log
    assert "validation at step 3:" in log and "validation at step 6:" in log and "finished at step 6" in log
    png = (run_dir / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    last = load_checkpoint(run_dir / "last.pt")
    assert last.step == MAX_STEPS and last.config == resolved
    model, _ = model_from_checkpoint(run_dir / "last.pt")
    torch.manual_seed(resolved.train.seed)
    initial = build_model(resolved).state_dict()
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert len(changed) > len(initial) // 2  # it trained
    # best.pt: the first validation with the best f@1% (ties keep the earlier one)
    best = load_checkpoint(run_dir / "best.pt")
    values = [(val_rows[s]["f@1%"], -s) for s in sorted(val_rows)]
    best_value, minus_step = max(values)
    assert best.step == -minus_step and best.state["best_value"] == pytest.approx(best_value, abs=0)
    assert last.state["best_value"] == pytest.approx(best_value, abs=0)
    model_from_checkpoint(run_dir / "best.pt")
    assert result.stdout.strip().splitlines()[-1] == \
        f"finished at step 6; best f@1% = {best_value:.4f}; run folder {run_dir}"


def test_training_ends_by_calibrating_best_pt_pruning_on_the_val_split(smoke_runs, tiny_dataset):
    """best.pt's config carries the (voxel_floor, prune_threshold) that scored best on the validation
    split, and validating best.pt as stored reproduces that score; without a decoder nothing is calibrated."""
    from pointstn.engine.calibrate import MAX_IMAGES, PRUNE_THRESHOLDS, VOXEL_FLOORS
    from pointstn.engine.validate import validate

    run_dir, _ = smoke_runs("sparse")
    report = json.loads((run_dir / "calibration.json").read_text())
    table = [(row["voxel_floor"], row["prune_threshold"], row["value"]) for row in report["table"]]
    assert [(f, t) for f, t, _ in table] == list(itertools.product(VOXEL_FLOORS, PRUNE_THRESHOLDS))
    best_value = max(v for *_, v in table)
    first_best = next((f, t) for f, t, v in table if v == best_value)
    chosen = report["chosen"]
    assert (chosen["voxel_floor"], chosen["prune_threshold"]) == first_best and chosen["value"] == best_value
    best = load_checkpoint(run_dir / "best.pt")
    assert (best.config.model.decoder.voxel_floor, best.config.model.decoder.prune_threshold) == first_best
    last = load_checkpoint(run_dir / "last.pt")
    assert last.config.model.decoder == load_config(run_dir / "config.yaml", ExperimentConfig).model.decoder
    model, _ = model_from_checkpoint(run_dir / "best.pt")
    val_set = PreparedDataset(tiny_dataset, split=best.config.data.val_split, image_size=best.config.data.image_size,
                              num_points=min(best.config.eval.num_gt_points, best.config.data.num_gt_points))
    assert validate(model, val_set, best.config, max_images=MAX_IMAGES)["f@1%"] == pytest.approx(best_value, abs=1e-7)
    assert "calibration: best.pt infers with" in (run_dir / "log.txt").read_text()
    psgn_dir, _ = smoke_runs("none")
    assert not (psgn_dir / "calibration.json").exists()


# --- 2. resume exactness ----------------------------------------------------------------------------

def test_resume_after_sigterm_continues_exactly_like_the_uninterrupted_run(smoke_runs, tiny_dataset, tmp_path,
                                                                            monkeypatch):
    """Run B is stopped by a real SIGTERM during step 3 (the loop finishes the step, validates, saves),
    then resumed; steps 4-6 and the final weights must equal the uninterrupted run A's (sparse decoder)."""
    run_a, _ = smoke_runs("sparse")
    original, calls = trainer.reconstruction_loss, []

    def loss_then_sigterm_at_step_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "reconstruction_loss", loss_then_sigterm_at_step_3)
    run_b = tmp_path / "run"
    overrides = smoke_overrides(tiny_dataset, "model.decoder.kind=sparse")
    stopped = train_cli(run_b, overrides)
    assert stopped.code == 0 and stopped.stdout.strip().splitlines()[-1].startswith("signal at step 3;")
    assert load_checkpoint(run_b / "last.pt").step == 3 and sorted(rows(run_b, "train")) == [1, 2, 3]
    monkeypatch.setattr(trainer, "reconstruction_loss", original)

    resumed = train_cli(run_b, overrides, "--resume")
    assert resumed.code == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1].startswith("finished at step 6;")
    assert_rows_match(rows(run_b, "train"), rows(run_a, "train"))
    assert_rows_match(rows(run_b, "val"), rows(run_a, "val"))
    assert load_checkpoint(run_b / "last.pt").step == MAX_STEPS
    assert_same_weights(run_b / "last.pt", run_a / "last.pt")
    log = (run_b / "log.txt").read_text()  # appended to, not replaced
    assert log.index("step 1 total=") < log.index("signal at step 3") < log.index("resumed from") \
        < log.index("step 4 total=") < log.index("finished at step 6")


class AbruptDeath(BaseException):
    """Raised inside a training step: the trainer writes nothing on the way out (its `finally` only closes the
    log handler), so the run folder is left exactly as a SIGKILL at that instant would leave it."""


def loss_that_dies_at_call(call: int):
    """trainer.reconstruction_loss that raises AbruptDeath at its `call`-th call (during that step)."""
    original, calls = trainer.reconstruction_loss, []

    def loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise AbruptDeath
        return original(*args, **kwargs)

    return loss


def assert_resume_completes_like(run_a: Path, run_b: Path, overrides: list[str]) -> None:
    """`--resume` of the killed run B finishes, logs every step exactly once, and ends like run A."""
    resumed = train_cli(run_b, overrides, "--resume")
    assert resumed.code == 0, resumed.stderr
    assert [r["step"] for r in history(run_b) if r["phase"] == "train"] == list(range(1, MAX_STEPS + 1))
    assert_rows_match(rows(run_b, "train"), rows(run_a, "train"))
    assert_rows_match(rows(run_b, "val"), rows(run_a, "val"))
    assert_same_weights(run_b / "last.pt", run_a / "last.pt")


def test_resume_after_an_abrupt_death_drops_the_history_past_the_checkpoint_and_matches(smoke_runs, tiny_dataset,
                                                                                       tmp_path, monkeypatch):
    """Run B (psgn baseline) dies during step 5: last.pt is at step 3 but history.json already holds step 4.
    The resumed run forgets step 4, redoes it, and ends exactly like the uninterrupted run A."""
    run_a, _ = smoke_runs("none")
    original = trainer.reconstruction_loss
    monkeypatch.setattr(trainer, "reconstruction_loss", loss_that_dies_at_call(5))
    run_b = tmp_path / "run"
    overrides = smoke_overrides(tiny_dataset, "model.decoder.kind=none")
    with pytest.raises(AbruptDeath):
        train_cli(run_b, overrides)
    assert load_checkpoint(run_b / "last.pt").step == 3 and sorted(rows(run_b, "train")) == [1, 2, 3, 4]
    monkeypatch.setattr(trainer, "reconstruction_loss", original)

    assert_resume_completes_like(run_a, run_b, overrides)


def test_death_right_after_last_pt_is_written_loses_no_history_row(smoke_runs, tiny_dataset, tmp_path, monkeypatch):
    """Run B dies the moment last.pt of step 3 is on disk. history.json must already hold step 3 (it is
    written first), so the resumed run logs every step exactly once and ends like the uninterrupted run A."""
    run_a, _ = smoke_runs("none")
    original = trainer.save_checkpoint

    def save_then_die_after_last_pt(path, **kwargs):
        original(path, **kwargs)
        if Path(path).name == "last.pt" and kwargs["step"] == 3:
            raise AbruptDeath

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die_after_last_pt)
    run_b = tmp_path / "run"
    overrides = smoke_overrides(tiny_dataset, "model.decoder.kind=none")
    with pytest.raises(AbruptDeath):
        train_cli(run_b, overrides)
    assert load_checkpoint(run_b / "last.pt").step == 3 and sorted(rows(run_b, "train")) == [1, 2, 3]
    assert sorted(rows(run_b, "val")) == [3]
    monkeypatch.setattr(trainer, "save_checkpoint", original)

    assert_resume_completes_like(run_a, run_b, overrides)


def test_the_retrieval_prior_trains_leaving_each_sample_s_object_out_and_resumes_from_its_checkpoint(
        tiny_dataset, tmp_path, monkeypatch):
    """Training fits the memory on the train split and excludes each sample's own object; validation
    excludes nothing; a resumed run takes the memory from last.pt (no refit) and ends like the uninterrupted one."""
    overrides = smoke_overrides(tiny_dataset, "model.decoder.kind=sparse", "model.retrieval_prior.enabled=true",
                                "model.retrieval_prior.points=64")
    forward, calls = RetrievalPrior.forward, []

    def spy(self, images, *, exclude_objects=None):
        calls.append((self.training, exclude_objects))
        return forward(self, images, exclude_objects=exclude_objects)

    monkeypatch.setattr(RetrievalPrior, "forward", spy)
    run_a = tmp_path / "a"
    result = train_cli(run_a, overrides)
    assert result.code == 0, result.stderr
    assert "retrieval prior: stored 9 views of 3 objects (64 points each)" in (run_a / "log.txt").read_text()
    assert [training for training, _ in calls].count(True) == MAX_STEPS
    assert all((exclude is not None) == training for training, exclude in calls)
    stored = load_checkpoint(run_a / "last.pt").model_state
    fresh = RetrievalPrior(points=64).fit(PreparedDataset(tiny_dataset, split="train", num_points=64))
    for name, value in fresh.state_dict().items():
        assert torch.equal(stored[f"retrieval_prior.{name}"], value), name

    original = trainer.reconstruction_loss
    monkeypatch.setattr(trainer, "reconstruction_loss", loss_that_dies_at_call(5))
    run_b = tmp_path / "b"
    with pytest.raises(AbruptDeath):
        train_cli(run_b, overrides)
    monkeypatch.setattr(trainer, "reconstruction_loss", original)

    def no_refit(*args, **kwargs):
        raise AssertionError("a resumed run must not refit the retrieval prior")

    monkeypatch.setattr(RetrievalPrior, "fit", no_refit)
    assert_resume_completes_like(run_a, run_b, overrides)


# --- 3. time limit ----------------------------------------------------------------------------------

def test_time_limit_saves_and_stops_cleanly(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    overrides = smoke_overrides(tiny_dataset, "model.decoder.kind=none", "train.max_steps=1000",
                                "train.checkpoint_every=1000", "train.val_every=1000")
    # 6e-8 s: the deadline has passed when the first step ends, whatever the machine speed (30 ms was
    # outrun on a quiet machine)
    result = train_cli(run_dir, overrides, "--time-limit", "1e-9")
    assert result.code == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("time limit at step 1;")
    last = load_checkpoint(run_dir / "last.pt")
    assert last.step == 1 and sorted(rows(run_dir, "train")) == [1]
    assert "time limit at step 1" in (run_dir / "log.txt").read_text()
    assert (run_dir / "curves.png").is_file()


# --- 4. NaN ------------------------------------------------------------------------------------------

def test_nan_loss_stops_with_one_line_naming_the_step_and_terms(smoke_runs, tiny_dataset, tmp_path, monkeypatch):
    """The 3rd canonical Chamfer turns NaN: call 5 of `chamfer_terms`, as the psgn baseline computes a
    canonical and a camera-frame term per step, in that order."""
    run_a, _ = smoke_runs("none")
    original, calls = losses.chamfer_terms, []

    def chamfer_nan_at_step_3(*args, **kwargs):
        calls.append(1)
        value = original(*args, **kwargs)
        return value * float("nan") if len(calls) == 5 else value

    monkeypatch.setattr(losses, "chamfer_terms", chamfer_nan_at_step_3)
    run_dir = tmp_path / "run"
    result = train_cli(run_dir, smoke_overrides(tiny_dataset, "model.decoder.kind=none", "train.checkpoint_every=1",
                                                "train.val_every=1000"))
    assert result.code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pointstn train: error: training stopped at step 3: non-finite loss: "
                               "chamfer_coarse_canonical=nan, chamfer_coarse_camera=")
    assert "rotation_deg=" in lines[0] and f"the last good checkpoint is {run_dir / 'last.pt'}" in lines[0]
    last = load_checkpoint(run_dir / "last.pt")
    assert last.step == 2 and all(torch.isfinite(v).all() for v in last.model_state.values())
    assert_rows_match(rows(run_dir, "train"), {s: r for s, r in rows(run_a, "train").items() if s <= 2})


def test_nan_gradient_with_a_finite_loss_stops_before_it_reaches_the_weights(tiny_dataset, tmp_path, monkeypatch):
    """At step 2 a term adds 0 to the loss but NaN to the gradients (d sqrt(x)/dx at 0 times 0): the run must
    stop at step 2 with last.pt still the finite step-1 weights (checkpoint_every=1), not save NaN weights."""
    original, calls = trainer.reconstruction_loss, []

    def nan_gradient_at_step_3(output, targets, weights, **options):
        calls.append(1)
        loss = original(output, targets, weights, **options)
        if len(calls) == 2:
            poison = (output.coarse.sum() * 0.0).sqrt() * 0.0  # value 0, gradient 0 * inf = NaN
            loss = type(loss)(total=loss.total + poison, terms=loss.terms)
        return loss

    monkeypatch.setattr(trainer, "reconstruction_loss", nan_gradient_at_step_3)
    run_dir = tmp_path / "run"
    result = train_cli(run_dir, smoke_overrides(tiny_dataset, "model.decoder.kind=none", "train.checkpoint_every=1",
                                                "train.val_every=1000"))
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "training stopped at step 2: non-finite gradient norm nan" in lines[0], result.stderr
    assert "total=" in lines[0] and f"the last good checkpoint is {run_dir / 'last.pt'}" in lines[0]
    last = load_checkpoint(run_dir / "last.pt")
    assert last.step == 1 and all(torch.isfinite(v).all() for v in last.model_state.values())


def test_nan_at_the_first_step_says_no_checkpoint_was_written(tiny_dataset, tmp_path, monkeypatch):
    original = losses.chamfer_terms
    monkeypatch.setattr(losses, "chamfer_terms", lambda *a, **k: original(*a, **k) * float("nan"))
    run_dir = tmp_path / "run"
    result = train_cli(run_dir, smoke_overrides(tiny_dataset, "model.decoder.kind=none"))
    assert result.code == 2
    assert "training stopped at step 1: non-finite loss" in result.stderr
    assert result.stderr.strip().endswith("no checkpoint was written") and not (run_dir / "last.pt").exists()
