"""Model suite: training images/s and inference latency of the default config vs its baselines.

Contenders (`CONTENDERS`), all from `configs/base.yaml` (quick mode: `configs/smoke.yaml`):

- `pointstn`: the default config as is;
- `psgn`: `model.decoder.kind=none`, the global-branch-only baseline (no sampler, no decoder);
- `stn_off`: `model.stn.enabled=false`, the ablation with the pose fixed to the nominal one.

Inputs: random images in [0, 1] at `data.image_size`; ground truth per sample is a sphere / box /
cylinder / flat box (`pointstn.bench.decoder.surface_samples`, longest edge 1, `data.num_gt_points`
exact surface samples) scaled to a longest edge of 8-25 cm, turned by a uniformly random rotation
and placed about 1 m in front of the camera (x_cam = R x + t), as `Targets` of the trainer.

Cases:

- train: one optimizer step at `train.batch_size` exactly as the trainer takes it: forward with
  `gt_points`, `reconstruction_loss` with the config's loss weights, backward, gradient clipping,
  AdamW step. Throughput = batch / median step time.
- inference, trained active set: `model.eval()`, `torch.no_grad()`, batch 1 and 16. A randomly
  initialised decoder prunes almost everything, which a trained one does not; so the decoder module's
  own `training` flag (not its layers') is set, which makes it keep the ground-truth shell at every
  level (keep = predicted OR occupied) -- the active sets of a decoder that predicts the ground truth,
  the operating point of a trained one, as in the decoder suite. The forward therefore also labels
  each level's voxels from the ground truth (a few lookups per level).
- inference, as initialised: plain `model.eval()` at batch 1, what the predictor runs on this random
  checkpoint (the decoder keeps only its per-level floor of voxels): a lower bound.

The ground truth reaches the model as the trainer passes it (`ground_truth_arguments`): normalized
canonical points, or camera-frame points when `model.decoder.target_frame` is "predicted".

Memory: the baseline is taken after the model, the optimizer and the inputs exist, before any
forward pass, so peak extra memory includes the libraries' first-call set-up (oneDNN, spconv) and,
for training, AdamW's state; the absolute peak RSS of the process is reported too.
"""

from __future__ import annotations

import math
import os
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pointstn.bench.header import section_header

if TYPE_CHECKING:
    import torch

    from pointstn.config import ExperimentConfig
    from pointstn.models.losses import Targets

NAME = "model"
TITLE = "Model: training images/s and inference latency (default config vs psgn baseline vs STN-off ablation)"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CONFIG, QUICK_CONFIG = "base.yaml", "smoke.yaml"
CONTENDERS = {"pointstn": (), "psgn": ("model.decoder.kind=none",), "stn_off": ("model.stn.enabled=false",)}
ACTIVE_SETS = ("trained", "initialised")
INFERENCE_BATCHES = (1, 16)
QUICK = {"batch": 2, "gt_points": 1024}
SIZE_RANGE_M = (0.08, 0.25)  # longest edge of the ground-truth objects
DISTANCE_M = 1.0  # camera to object centre, along z


def load_experiment(config: str, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """`configs/<config>` with `overrides` (`key.sub=value`), validated against the schema."""
    from pointstn.config import ExperimentConfig, load_config

    return load_config(CONFIGS / config, ExperimentConfig, list(overrides))


def contender_overrides(contender: str) -> tuple[str, ...]:
    if contender not in CONTENDERS:
        raise ValueError(f"unknown model contender {contender!r}; valid choices: {', '.join(CONTENDERS)}")
    return CONTENDERS[contender]


def cases(quick: bool) -> list[dict]:
    """Training at the config's batch size; inference at batch 1 and 16 (trained active set), batch 1 as initialised."""
    config = QUICK_CONFIG if quick else CONFIG
    train_batch = QUICK["batch"] if quick else load_experiment(config).train.batch_size
    gt_points = QUICK["gt_points"] if quick else None  # None: the config's data.num_gt_points
    base = {"config": config, "gt_points": gt_points, "seed": 0}

    def plan(warmup: int, repeats: int) -> list[dict]:
        return [{"name": name, "warmup": warmup, "repeats": 1 if quick else repeats} for name in CONTENDERS]

    inference = [(b, "trained") for b in ((1, QUICK["batch"]) if quick else INFERENCE_BATCHES)] + [(1, "initialised")]
    out = [{"case": f"train, batch {train_batch}", "params": {**base, "mode": "train", "batch": train_batch},
            "rounds": 1 if quick else 3, "contenders": plan(1, 3)}]
    for batch, active in inference:
        out.append({
            "case": f"inference, batch {batch}, {active}",
            "params": {**base, "mode": "inference", "batch": batch, "active_set": active},
            "rounds": 1 if quick else 3,
            "contenders": plan(3, 15) if batch == 1 else plan(1, 3),
        })  # fmt: skip
    return out


def synthetic_batch(*, batch: int, image_size: int, gt_points: int, seed: int) -> tuple[torch.Tensor, Targets]:
    """images (B, 3, S, S) uniform in [0, 1] and valid `Targets` (module docstring), deterministic in `seed`."""
    import torch

    from pointstn.bench.decoder import SHAPES, surface_samples
    from pointstn.models.losses import Targets
    from pointstn.ops.rotation import random_rotation

    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, image_size, image_size, generator=g)
    normalized = torch.stack([surface_samples(SHAPES[b % len(SHAPES)], gt_points, g) for b in range(batch)])
    low, high = SIZE_RANGE_M
    size = low + (high - low) * torch.rand(batch, generator=g)
    points = normalized * size[:, None, None]
    rotation = random_rotation(batch, generator=g)
    translation = torch.cat((0.1 * (torch.rand(batch, 2, generator=g) - 0.5),
                             DISTANCE_M + 0.1 * (torch.rand(batch, 1, generator=g) - 0.5)), dim=1)
    points_camera = points @ rotation.transpose(1, 2) + translation[:, None, :]
    return images, Targets(points=points, points_camera=points_camera, rotation=rotation, size=size)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def ground_truth_arguments(config: ExperimentConfig, targets: Targets) -> dict:
    """The keyword arguments that hand the ground truth to the model, as `pointstn.engine.trainer` does."""
    from pointstn.models.reconstructor import occupancy_truth

    return occupancy_truth(config.model.decoder.target_frame, points_camera=targets.points_camera,
                           points=targets.points, size=targets.size)


def train_step(model, optimizer, images: torch.Tensor, targets: Targets, *, ground_truth: dict, weights,
               grad_clip: float, fine_points: int | None = None):
    """One training step as `pointstn.engine.trainer` takes it; returns (output, total loss as float)."""
    import torch

    from pointstn.models.losses import reconstruction_loss

    output = model(images, **ground_truth)
    loss = reconstruction_loss(output, targets, weights, fine_points=fine_points)
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    optimizer.step()
    return output, float(loss.total.detach())


def inference_step(model, images: torch.Tensor, *, ground_truth: dict, active_set: str):
    """One batched forward pass under no_grad (see the module docstring for `active_set`); `ground_truth`
    (from `ground_truth_arguments`) is only passed for the trained active set of a model with a decoder."""
    import torch

    if active_set not in ACTIVE_SETS:
        raise ValueError(f"unknown active set {active_set!r}; valid choices: {', '.join(ACTIVE_SETS)}")
    with torch.no_grad():
        if active_set == "trained" and model.decoder is not None:
            return model(images, **ground_truth)
        return model(images)


def build(contender: str, params: dict, *, extra_overrides: tuple[str, ...] = ()):
    """(config, model) of a contender, weights seeded by params["seed"]."""
    import torch

    from pointstn.models.build import build_model

    config = load_experiment(params["config"], (*contender_overrides(contender), *extra_overrides))
    torch.manual_seed(int(params["seed"]))
    return config, build_model(config)


def measure(contender: str, params: dict, *, warmup: int, repeats: int, memory,
            extra_overrides: tuple[str, ...] = ()) -> dict:
    """Time `repeats` training steps or forward passes after `warmup` ones (runs in the worker process)."""
    import torch

    from pointstn.models.losses import LossWeights

    config, model = build(contender, params, extra_overrides=extra_overrides)
    batch = int(params["batch"])
    gt_points = int(params["gt_points"] or config.data.num_gt_points)
    images, targets = synthetic_batch(batch=batch, image_size=config.data.image_size, gt_points=gt_points,
                                      seed=int(params["seed"]))
    ground_truth = ground_truth_arguments(config, targets)
    if params["mode"] == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
        weights = LossWeights.from_config(config.loss)

        def step():
            return train_step(model, optimizer, images, targets, ground_truth=ground_truth, weights=weights,
                              grad_clip=config.train.grad_clip, fine_points=config.model.num_output_points)
    elif params["mode"] == "inference":
        model.eval()
        if model.decoder is not None:
            model.decoder.training = params["active_set"] == "trained"  # the flag only; its layers stay in eval mode

        def step():
            return inference_step(model, images, ground_truth=ground_truth, active_set=params["active_set"]), None
    else:
        raise ValueError(f"unknown model benchmark mode {params['mode']!r}; valid: train, inference")
    load_before = os.getloadavg()[0]
    memory.mark_inputs_allocated()
    for _ in range(warmup):
        step()
    times = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        start = time.perf_counter()
        output, loss = step()
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "times_s": times,
        "check": {
            "batch": batch,
            "parameters": parameter_count(model),
            "output_points_per_sample": float(output.lengths.float().mean()),
            "finest_candidates_per_sample": output.levels[0].coords.shape[0] / batch if output.levels else 0.0,
            "loss": loss,
            "peak_rss_mb": memory.peak_mb(),
            # what the allocator costs in the kernel (pointstn/allocator.py): pages faulted in, system CPU time
            "page_faults_per_step": (after.ru_minflt - before.ru_minflt) / repeats,
            "system_ms_per_step": 1000.0 * (after.ru_stime - before.ru_stime) / repeats,
            "loadavg_before_after": [load_before, os.getloadavg()[0]],
        },
    }


def markdown(report: dict) -> str:
    """This suite's section: environment, parameter counts, one row per case and contender."""
    env = report["environment"]
    lines = [
        *section_header(report),
        (
            "- contenders: `pointstn` = the config as is; `psgn` = `model.decoder.kind=none` (global branch only); "
            "`stn_off` = `model.stn.enabled=false` (pose fixed to the nominal one). Inputs: random images in [0, 1]; "
            "ground truth: procedural surfaces (sphere, box, cylinder, flat box) of 8-25 cm, randomly rotated, ~1 m away."
        ),
        (
            "- train: forward + `reconstruction_loss` + backward + gradient clipping + AdamW step, as the trainer does. "
            "Inference: `eval()` + `no_grad()`; *trained* = the decoder keeps the ground-truth shell at every level (the "
            "active sets of a trained decoder; random weights would keep only the decoder's floor), *initialised* = the random "
            "checkpoint as the predictor runs it (a lower bound)."
        ),
        (
            "- each contender runs in a fresh process per round (rounds alternate the order); median over all timed "
            "steps, spread = [min, max]; peak extra = peak RSS minus RSS after the model, optimizer and inputs exist "
            "(includes first-call library set-up and AdamW state); page faults (minor) and system CPU time per timed "
            "step, last round."
        ),
    ]
    if env["quick"]:
        lines.append("- **quick mode: tiny sizes, a smoke test, not a measurement**")
    parameters = {}
    for case in report["cases"]:
        for name, result in case["results"].items():
            parameters.setdefault(name, result["check"]["parameters"])
    config = report["cases"][0]["params"]["config"] if report["cases"] else CONFIG
    lines += ["", f"Parameters (`configs/{config}`): " + ", ".join(f"{n} {p:,}" for n, p in parameters.items()), ""]
    lines += [
        "| case | contender | median (s) | min .. max (s) | n | images/s | ms / image | output points / sample | peak extra MB | peak RSS MB | page faults / step | system ms / step | vs pointstn |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    for case in report["cases"]:
        batch = case["params"]["batch"]
        reference = case["results"].get("pointstn", {}).get("timing", {}).get("median_s")
        for name, result in case["results"].items():
            t, check = result["timing"], result["check"]
            ratio = f"{reference / t['median_s']:.2f}x" if reference else ""
            lines.append(
                f"| {case['case']} | {name} | {t['median_s']:.4f} | {t['min_s']:.4f} .. {t['max_s']:.4f} | {t['n']} | "
                f"{batch / t['median_s']:.1f} | {1000 * t['median_s'] / batch:.1f} | "
                f"{check['output_points_per_sample']:.0f} | {result['peak_extra_mb']:.0f} | {check['peak_rss_mb']:.0f} | "
                f"{check['page_faults_per_step']:.0f} | {check['system_ms_per_step']:.1f} | {ratio} |"
            )
    lines += ["", "vs pointstn = pointstn's median time / the contender's (above 1: the contender is faster)."]
    return "\n".join(lines) + "\n"
