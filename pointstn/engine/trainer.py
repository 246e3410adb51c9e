"""The training loop: deterministic data order, AdamW with warm-up and cosine decay, validation with
`best.pt`, atomic `last.pt`, exact resume, clean stops (SIGTERM/SIGINT/time limit), DDP via torchrun.

Data order. Epoch e visits a permutation drawn from (seed, e); global batch k of the epoch is
positions [k*B, (k+1)*B) of it and rank r of W takes the r-th 1/W of that batch, so W processes see
exactly the samples of the single-process run. Augmentations and point subsets depend only on
(seed, epoch, item). A resumed run therefore continues with the same batches, at the same step.

Failures. A non-finite loss or gradient norm stops the run before the weights change, with one line naming
the step and the loss terms; last.pt stays the last good state. A resume whose config differs (outside
`RESUMABLE`) is refused before anything in the run folder is rewritten. Under DDP, a peer that died or hung
(see `pointstn.engine.distributed`) ends the survivors with one line instead of a traceback.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from pointstn.config import ExperimentConfig, dump_config, to_dict
from pointstn.data.augment import Augmentation
from pointstn.data.dataset import PreparedDataset
from pointstn.data.format import read_manifest
from pointstn.data.shapes.spec import UNIQUE_ROTATION_SYMMETRIES
from pointstn.engine.calibrate import calibrate_pruning
from pointstn.engine.checkpoint import load_checkpoint, load_model_state, rng_state, save_checkpoint, set_rng_state
from pointstn.engine.distributed import (
    any_rank,
    barrier,
    init_distributed,
    is_communication_error,
    reduce_mean,
    shutdown,
)
from pointstn.engine.evaluate import evaluation_points
from pointstn.engine.history import History
from pointstn.engine.validate import LOWER_IS_BETTER, validate
from pointstn.errors import PointstnError
from pointstn.io.atomic import atomic_write_text
from pointstn.models.build import build_model
from pointstn.models.losses import LossWeights, Targets, reconstruction_loss
from pointstn.models.reconstructor import occupancy_truth

log = logging.getLogger("pointstn.train")
# keys a resumed run may change (more steps, a new time limit, other threads or workers)
RESUMABLE = ("train.max_steps", "train.time_limit_minutes", "train.threads", "data.num_workers", "output_dir")


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    best_value: float | None
    stopped: str  # "finished", "signal", "time limit"


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _differing_keys(saved, current, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (or config sections) of one type."""
    a, b = _flatten(to_dict(saved), prefix), _flatten(to_dict(current), prefix)
    return sorted(k for k in a if a[k] != b.get(k))


def check_resumable(saved: ExperimentConfig, current: ExperimentConfig, where: Path) -> None:
    differing = [k for k in _differing_keys(saved, current) if k not in RESUMABLE]
    if differing:
        raise PointstnError(f"{where} was trained with another config (differs in: {', '.join(differing)}); "
                            "resume with the same config or start a new run")


def check_rig(config: ExperimentConfig, root: Path) -> None:
    rig = read_manifest(root)["rig"]
    distance = rig["distance_range_m"]
    if abs(rig["fov_y_deg"] - config.model.rig.fov_y_deg) > 1e-6 or abs(distance[0] - config.model.rig.distance_m) > 1e-6:
        raise PointstnError(
            f"dataset {root} was rendered with fov {rig['fov_y_deg']} deg at {distance} m but the model assumes "
            f"model.rig.fov_y_deg={config.model.rig.fov_y_deg}, model.rig.distance_m={config.model.rig.distance_m}"
        )


def learning_rate_factor(step: int, *, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0.05 at `total` steps."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def epoch_batches(num_items: int, *, batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list[list[int]]:
    """This rank's index lists for every global batch of an epoch (incomplete last batch dropped)."""
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    per_rank = batch_size // world
    return [order[k * batch_size + rank * per_rank: k * batch_size + (rank + 1) * per_rank]
            for k in range(num_items // batch_size)]


class _StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks at step boundaries."""

    def __init__(self):
        self.reason: str | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.reason = "signal"

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM/SIGINT to the main process, which stops at a step boundary and then
    shuts them down. Otherwise a signal sent to every process of the job (`kill -TERM -- -PGID`, a batch
    system cancelling the job) kills a worker and training dies with "DataLoader worker ... killed"."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _setup_logging(run_dir: Path, is_main: bool) -> logging.Handler | None:
    if not is_main:
        log.setLevel(logging.WARNING)
        return None
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("pointstn").addHandler(handler)
    logging.getLogger("pointstn").setLevel(logging.INFO)
    return handler


def _last_good(run_dir: Path) -> str:
    path = run_dir / "last.pt"
    return f"the last good checkpoint is {path}" if path.is_file() else "no checkpoint was written"


def train(config: ExperimentConfig, *, run_dir: str | Path, resume: str | Path | None = None,
          init: str | Path | None = None, time_limit_minutes: float | None = None,
          progress: bool = True) -> TrainResult:
    """Train `config` in `run_dir`. `resume`: a checkpoint to continue from (same config, same step).
    `init`: a checkpoint whose model weights the run starts from (fine-tuning): a fresh optimizer,
    schedule and step count; the weights must fit this config's model exactly (`load_model_state`)."""
    context = init_distributed()
    run_dir = Path(run_dir)
    train_cfg = config.train
    handler = None
    try:
        if train_cfg.batch_size % context.world_size:
            raise PointstnError(f"train.batch_size={train_cfg.batch_size} must be divisible by the "
                                f"{context.world_size} processes")
        if train_cfg.threads:
            torch.set_num_threads(train_cfg.threads)
        check_rig(config, Path(config.data.root))
        if resume is not None and init is not None:
            raise PointstnError("--resume continues a run and --init starts a new one from a checkpoint's "
                                "weights; give one of them")
        checkpoint = initial = None
        if resume is not None:  # checked before anything in the run folder is rewritten
            checkpoint = load_checkpoint(resume, map_location=context.device)
            check_resumable(checkpoint.config, config, Path(resume))
        if init is not None:  # likewise: a checkpoint that does not fit fails before the run folder exists
            initial = load_checkpoint(init, map_location=context.device)
            load_model_state(build_model(config), initial)
        if context.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.yaml", dump_config(config))
        barrier(context)
        handler = _setup_logging(run_dir, context.is_main)
        return _train(config, run_dir, context, checkpoint, initial, time_limit_minutes, progress)
    except RuntimeError as exc:
        if not (context.enabled and is_communication_error(exc)):
            raise
        first = " ".join(str(exc).split())[:300]
        raise PointstnError(f"process {context.rank} of {context.world_size}: another training process died or "
                            f"stopped responding ({first}); {_last_good(run_dir)}") from None
    finally:
        if handler is not None:
            logging.getLogger("pointstn").removeHandler(handler)
            handler.close()
        shutdown(context)


def _train(config, run_dir, context, checkpoint, initial, time_limit_minutes, progress) -> TrainResult:
    from tqdm import tqdm

    train_cfg = config.train
    torch.manual_seed(train_cfg.seed)
    augmentation = Augmentation(roll_probability=0.3) if config.data.augment else None
    train_set = PreparedDataset(config.data.root, split=config.data.train_split, num_points=config.data.num_gt_points,
                                image_size=config.data.image_size, augmentation=augmentation, deterministic=False,
                                seed=train_cfg.seed)
    val_set = PreparedDataset(config.data.root, split=config.data.val_split, image_size=config.data.image_size,
                              num_points=evaluation_points(config, config.data.root))
    unique_rotation = torch.tensor([r["symmetry"] in UNIQUE_ROTATION_SYMMETRIES for r in train_set.records],
                                   device=context.device)  # "unknown" (user meshes) counts as symmetric
    steps_per_epoch = len(train_set) // train_cfg.batch_size
    if steps_per_epoch == 0:
        raise PointstnError(f"the train split has {len(train_set)} images, fewer than one batch of {train_cfg.batch_size}")
    model = build_model(config).to(context.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(
        s, warmup=train_cfg.warmup_steps, total=train_cfg.max_steps))
    step, best = 0, None
    history = History(run_dir)
    if initial is not None:
        load_model_state(model, initial)
        differing = _differing_keys(initial.config.model, config.model, "model.")
        log.info("starting from the weights of %s (its step %d)%s", initial.path, initial.step,
                 f"; model keys that differ from its config: {', '.join(differing)}" if differing else "")
    if checkpoint is not None:
        load_model_state(model, checkpoint)
        optimizer.load_state_dict(checkpoint.state["optimizer"])
        scheduler.load_state_dict(checkpoint.state["scheduler"])
        set_rng_state(checkpoint.state["rng"])
        step, best = checkpoint.step, checkpoint.state.get("best_value")
        history = History.load(run_dir, up_to_step=step)
        log.info("resumed from %s at step %d", checkpoint.path, step)
    prior = getattr(model, "retrieval_prior", None)
    if prior is not None and checkpoint is None:  # a resumed run keeps the memory its checkpoint holds
        prior.fit(PreparedDataset(config.data.root, split=config.data.train_split, image_size=config.data.image_size,
                                  num_points=config.model.retrieval_prior.points))
    network = model
    if context.enabled:
        if prior is not None:  # identical on every rank (fitted from the same files): not broadcast every step
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                model, [f"retrieval_prior.{name}" for name, _ in prior.named_buffers()])
        network = DistributedDataParallel(model)
    weights = LossWeights.from_config(config.loss)
    limit = time_limit_minutes if time_limit_minutes is not None else train_cfg.time_limit_minutes
    deadline = time.monotonic() + 60 * limit if limit else math.inf
    bar = tqdm(total=train_cfg.max_steps, initial=step, disable=not (progress and context.is_main), unit="step")
    stopped, last_saved = "finished", -1

    def save(name: str, best_value: float | None) -> None:  # explicit: _validate holds the newer best
        if context.is_main:
            save_checkpoint(run_dir / name, model=model, config=config, step=step, optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), rng=rng_state(), best_value=best_value,
                            epoch=step // steps_per_epoch)

    with _StopRequest() as stop:
        while step < train_cfg.max_steps and stopped == "finished":
            epoch, skip = divmod(step, steps_per_epoch)
            train_set.set_epoch(epoch)
            batches = epoch_batches(len(train_set), batch_size=train_cfg.batch_size, seed=train_cfg.seed, epoch=epoch,
                                    rank=context.rank, world=context.world_size)[skip:]
            loader = torch.utils.data.DataLoader(train_set, batch_sampler=batches, num_workers=config.data.num_workers,
                                                 persistent_workers=False, worker_init_fn=_ignore_stop_signals)
            tick = time.perf_counter()
            for batch in loader:
                network.train()
                batch = type(batch)(*(t.to(context.device) for t in batch))
                targets = Targets(points=batch.points, points_camera=batch.points_camera, rotation=batch.rotation,
                                  size=batch.extents.max(dim=1).values,
                                  unique_rotation=unique_rotation[batch.object_index])
                truth = occupancy_truth(config.model.decoder.target_frame, points_camera=targets.points_camera,
                                        points=targets.points, size=targets.size)
                output = network(batch.image, exclude_objects=batch.object_index, **truth)
                try:
                    subset = torch.Generator(device=context.device).manual_seed(train_cfg.seed * 1_000_003 + step)
                    loss = reconstruction_loss(output, targets, weights, fine_points=config.model.num_output_points,
                                               generator=subset)
                except FloatingPointError as exc:
                    raise PointstnError(f"training stopped at step {step + 1}: {exc}; {_last_good(run_dir)}") from None
                optimizer.zero_grad(set_to_none=True)
                loss.total.backward()
                # a finite loss can still have NaN/inf gradients; stepping on them would poison the weights
                # (and the next last.pt) before any loss showed it
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), train_cfg.grad_clip if train_cfg.grad_clip > 0 else math.inf)
                if not torch.isfinite(grad_norm):
                    terms = ", ".join(f"{k}={v:.4g}" for k, v in loss.scalars().items())
                    raise PointstnError(f"training stopped at step {step + 1}: non-finite gradient norm "
                                        f"{float(grad_norm)} (loss terms: {terms}); {_last_good(run_dir)}")
                lr = optimizer.param_groups[0]["lr"]  # the rate this step used (the scheduler moves on next)
                optimizer.step()
                scheduler.step()
                step += 1
                now = time.perf_counter()
                images_per_s = train_cfg.batch_size / max(now - tick, 1e-9)  # data wait + step, no bookkeeping
                bar.update(1)
                if step % train_cfg.log_every == 0 or step == train_cfg.max_steps:
                    values = reduce_mean(loss.scalars(), context)
                    values.update(lr=lr, images_per_s=images_per_s)
                    history.add(step, "train", values)
                    bar.set_postfix(loss=f"{values['total']:.4f}", img_s=f"{images_per_s:.1f}")
                    log.info("step %d %s", step, " ".join(f"{k}={v:.4g}" for k, v in values.items()))
                if step % train_cfg.val_every == 0 or step == train_cfg.max_steps:
                    best = _validate(model, val_set, config, context, step, best, history, save)
                if context.is_main:
                    # before last.pt: a death between the two then leaves history rows past the checkpoint
                    # (dropped on resume), never a checkpoint whose own step's rows are missing
                    history.save()
                if step % train_cfg.checkpoint_every == 0:
                    save("last.pt", best)
                    last_saved = step
                tick = time.perf_counter()
                reason = stop.reason or ("time limit" if time.monotonic() > deadline else None)
                if any_rank(reason is not None, context):
                    stopped = reason or "signal"  # None here: another rank was asked to stop
                    break
                if step >= train_cfg.max_steps:
                    break
    bar.close()
    if last_saved != step:
        save("last.pt", best)
    if context.is_main and stopped != "signal":
        _calibrate_best(model, val_set, config, run_dir)
    if context.is_main:
        history.save()
        history.plot(metric=train_cfg.best_metric)
        log.info("%s at step %d; run folder %s", stopped, step, run_dir)
    return TrainResult(run_dir=run_dir, step=step, best_value=best, stopped=stopped)


def _calibrate_best(model, val_set, config, run_dir: Path) -> None:
    """Pick best.pt's inference pruning on the validation split (`pointstn.engine.calibrate`) and write
    it into best.pt's config. Changes `model`'s weights to best.pt's (training is over)."""
    path = run_dir / "best.pt"
    if not config.train.calibrate_pruning or model.decoder is None or not path.is_file():
        return
    best = load_checkpoint(path)
    load_model_state(model, best)
    calibration = calibrate_pruning(model, val_set, best.config)
    for floor, threshold, value in calibration.table:
        log.info("calibration: voxel_floor=%g prune_threshold=%g -> val %s=%s", floor, threshold,
                 config.train.best_metric, "n/a" if value is None else f"{value:.4g}")
    log.info("calibration: best.pt infers with voxel_floor=%g prune_threshold=%g", calibration.voxel_floor,
             calibration.prune_threshold)
    atomic_write_text(run_dir / "calibration.json", json.dumps({
        "metric": config.train.best_metric, "chosen": {"voxel_floor": calibration.voxel_floor,
                                                      "prune_threshold": calibration.prune_threshold,
                                                      "value": calibration.value},
        "table": [{"voxel_floor": f, "prune_threshold": t, "value": v} for f, t, v in calibration.table]}, indent=1))
    save_checkpoint(path, model=model, config=calibration.apply(best.config), step=best.step, **best.state)


def _validate(model, val_set, config, context, step, best, history, save):
    metric = config.train.best_metric
    value = None
    if context.is_main:
        summary = validate(model, val_set, config)
        values = {k: v for k, v in summary.items() if v is not None}
        history.add(step, "val", values)
        log.info("validation at step %d: %s", step, " ".join(f"{k}={v:.4g}" for k, v in values.items()))
        value = summary.get(metric)
        better = value is not None and (best is None or (value < best if metric in LOWER_IS_BETTER else value > best))
        if better:
            best = value
            save("best.pt", best)
    barrier(context)
    return best
