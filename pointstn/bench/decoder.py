"""Decoder suite: the sparse U-Net decoder vs the dense one with the same channel plan.

Case: one resolution R (32, 64, 128), batch 4, float32, channels (32, 64, 128), 64 input channels,
K = 4 points per voxel. Inputs are realistic: each sample is a procedural-like object (sphere, box,
cylinder, flat box) normalized into [-0.5, 0.5]^3; the decoder input is 2048 noisy surface samples
(the coarse cloud) with random features, the ground-truth occupancy comes from 16384 exact surface
samples (the evaluation's ground-truth count), so occupancy is a thin shell. One step = forward in
training mode with the targets (keep = predicted OR occupied), BCE of every level + a point term,
backward. At initialisation almost nothing is predicted occupied, so the active sets are those of a
decoder that predicts the ground truth, the operating point of a trained one; the table reports
them (candidate voxels per sample at each level).

Memory: before the baseline is taken, one step on a 16-point input initialises the libraries
(spconv's first-call setup, oneDNN), so peak extra memory is the decoder's, not the imports'.

Allocator: peak RSS also holds what glibc's malloc keeps after `free` -- with its default dynamic
mmap threshold, blocks of a few MB freed in one step are reused from the heap in the next and the
heap's high-water mark creeps up over steps. The cases at R = 32 and 64 therefore run twice: with
glibc's default allocator (`POINTSTN_ALLOCATOR=glibc`: not the settings the command line picks,
`pointstn.allocator`), and with `MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=65536` in the
worker's environment (blocks above 64 KB are mapped and returned at `free`), so the peak is the
step's live working set. Both contenders get the same setting; both rows are reported.

Recomputation: at R = 32 and 64 both decoders also run with `recompute=True` (norm + ReLU outputs
recomputed in the backward pass instead of kept; `model.decoder.recompute`), under the mmap setting.

Infeasible cases: a dense case whose estimated peak (`dense_peak_estimate_gb`) exceeds
`MEMORY_BOUND_GB` is measured at batch 1, and its time and memory are multiplied by the batch
(activations and dense convolution work are linear in the batch): such rows say *extrapolated*.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

NAME = "decoder"
TITLE = "Sparse vs dense U-Net decoder, forward + backward (batch 4, channels 32/64/128, float32)"
BATCH = 4
CHANNELS = (32, 64, 128)
IN_CHANNELS = 64
POINTS_PER_VOXEL = 4
INPUT_POINTS = 2048
TARGET_POINTS = 16384
RESOLUTIONS = (32, 64, 128)
MEMORY_BOUND_GB = 16.0
# DESIGN.md section 5: sparse at least this much faster / leaner than dense
TARGETS = {32: (3.7, 7.0), 64: (9.0, 10.0)}
SHAPES = ("sphere", "box", "cylinder", "slab")
# "glibc default": glibc's own settings, not the command line's (pointstn/allocator.py), as in every earlier run
ALLOCATORS = {"glibc default": {"POINTSTN_ALLOCATOR": "glibc"},
              "mmap threshold 64 KB": {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}}
ALLOCATOR_RESOLUTIONS = (32, 64)  # resolutions measured under every allocator setting (the rest: default)
QUICK = {"resolutions": (8, 16), "channels": (8, 16), "batch": 2, "input_points": 256, "target_points": 1024}


def dense_peak_estimate_gb(*, batch: int, resolution: int, channels: tuple[int, ...], in_channels: int) -> float:
    """Rough peak memory of a dense forward + backward step, in GB.

    Per voxel of level l (r = R / 2**l), the tensors autograd keeps: two (conv output, norm output)
    per conv block of c_l channels (stem or down + encoder block, up, refine, grow at the coarsest),
    the skip sum; at the finest level also the input grid (built, then made contiguous: 2 C_in) and
    16 floats of bookkeeping (voxel coords, keys, targets); times 1.25 for the gradients alive
    during backward. It is within about 10% of the measured peak at R = 64 (2.2 GB at batch 4).
    """
    floats = 0.0
    for level, c in enumerate(channels):
        voxels = (resolution >> level) ** 3
        blocks = 2 + (level < len(channels) - 1) + (level == len(channels) - 1) + (level > 0)
        floats += voxels * (2 * c * blocks + c + (2 * in_channels + 16 if level == 0 else 0))
    return 1.25 * 4 * batch * floats / 1e9


def cases(quick: bool) -> list[dict]:
    """One case per resolution (and allocator setting, see the module docstring); dense runs at batch 1
    (extrapolated) where batch 4 would exceed the bound."""
    out = []
    resolutions = QUICK["resolutions"] if quick else RESOLUTIONS
    for index, r in enumerate(resolutions):
        channels = QUICK["channels"] if quick else CHANNELS
        batch = QUICK["batch"] if quick else BATCH
        # quick mode exercises the extrapolation path on its last case with a tiny bound
        bound = (1e-6 if index == len(resolutions) - 1 else MEMORY_BOUND_GB) if quick else MEMORY_BOUND_GB
        estimate = dense_peak_estimate_gb(batch=batch, resolution=r, channels=channels, in_channels=IN_CHANNELS)
        heavy = r >= 128
        allocators = list(ALLOCATORS) if (index == 0 if quick else r in ALLOCATOR_RESOLUTIONS) else ["glibc default"]
        settings = [(allocator, False) for allocator in allocators]
        if len(allocators) > 1:
            settings.append(("mmap threshold 64 KB", True))
        for allocator, recompute in settings:
            out.append({
                "case": f"R={r}" + ("" if allocator == "glibc default" else f", {allocator}")
                + (", recompute" if recompute else ""),
                "params": {
                    "resolution": r, "batch": batch, "dense_batch": batch if estimate <= bound else 1,
                    "channels": list(channels), "in_channels": IN_CHANNELS, "points_per_voxel": POINTS_PER_VOXEL,
                    "input_points": QUICK["input_points"] if quick else INPUT_POINTS,
                    "target_points": QUICK["target_points"] if quick else TARGET_POINTS,
                    "memory_bound_gb": bound, "dense_estimate_gb": estimate, "seed": 0,
                    "allocator": allocator, "worker_env": ALLOCATORS[allocator], "recompute": recompute,
                },
                "rounds": 1 if quick else (2 if heavy else 3),
                "contenders": [
                    {"name": "sparse", "warmup": 1, "repeats": 2 if quick else 5},
                    {"name": "dense", "warmup": 1, "repeats": 2 if quick else (2 if heavy or r >= 64 else 5)},
                ],
            })  # fmt: skip
    return out


def surface_samples(shape: str, count: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 3) points uniformly (by area) on a procedural-like object fitting [-0.5, 0.5]^3, longest edge 1."""
    import torch

    g = generator
    if shape == "sphere":
        d = torch.randn(count, 3, generator=g)
        return 0.5 * d / d.norm(dim=1, keepdim=True)
    if shape in ("box", "slab"):
        extents = torch.tensor([1.0, 0.7, 0.45] if shape == "box" else [1.0, 0.9, 0.12])
        areas = torch.stack([extents[1] * extents[2], extents[0] * extents[2], extents[0] * extents[1]]).repeat(2)
        face = torch.multinomial(areas, count, replacement=True, generator=g)
        p = (torch.rand(count, 3, generator=g) - 0.5) * extents
        axis = face % 3
        p[torch.arange(count), axis] = torch.where(face < 3, 0.5, -0.5) * extents[axis]
        return p
    if shape == "cylinder":
        radius, height = 0.3, 1.0
        areas = torch.tensor([2 * math.pi * radius * height, math.pi * radius**2, math.pi * radius**2])
        part = torch.multinomial(areas, count, replacement=True, generator=g)
        angle = torch.rand(count, generator=g) * 2 * math.pi
        rho = torch.where(part == 0, radius, radius * torch.rand(count, generator=g).sqrt())
        z = torch.where(part == 0, height * (torch.rand(count, generator=g) - 0.5), torch.where(part == 1, 0.5, -0.5))
        return torch.stack((rho * angle.cos(), rho * angle.sin(), z), dim=1)
    raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


def make_inputs(*, batch: int, input_points: int, target_points: int, in_channels: int, seed: int):
    """points (B, N, 3) noisy surface samples, features (B, N, C), ground truth (B, M, 3) exact samples."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shapes = [SHAPES[b % len(SHAPES)] for b in range(batch)]
    gt = torch.stack([surface_samples(s, target_points, g) for s in shapes])
    points = torch.stack([surface_samples(s, input_points, g) for s in shapes])
    points = (points + 0.01 * torch.randn(points.shape, generator=g)).clamp(-0.5, 0.5)
    features = torch.randn(batch, input_points, in_channels, generator=g)
    return points, features, gt


def build_decoder(contender: str, params: dict):
    from pointstn.models.dense_unet import DenseUNetDecoder
    from pointstn.models.sparse_unet import SparseUNetDecoder

    classes = {"sparse": SparseUNetDecoder, "dense": DenseUNetDecoder}
    if contender not in classes:
        raise ValueError(f"unknown decoder contender {contender!r}; valid choices: {', '.join(classes)}")
    return classes[contender](
        in_channels=int(params["in_channels"]), channels=tuple(params["channels"]),
        resolution=int(params["resolution"]), points_per_voxel=int(params["points_per_voxel"]),
        recompute=bool(params.get("recompute", False)),
    )  # fmt: skip


def train_step(model, points, features, targets):
    """Forward (training mode, with targets) + BCE of every level + a point term + backward."""
    import torch.nn.functional as F

    model.zero_grad(set_to_none=True)
    features.grad = None
    out = model(points, features, targets=targets)
    loss = sum(F.binary_cross_entropy_with_logits(level.logits, level.targets) for level in out.levels)
    loss = loss + out.points.square().sum() / out.lengths.sum()
    loss.backward()
    return out, loss.detach()


def measure(contender: str, params: dict, *, warmup: int, repeats: int, memory) -> dict:
    """Time `repeats` steps after `warmup` ones (runs in the worker process)."""
    import torch

    torch.manual_seed(int(params["seed"]))
    batch = int(params["batch"] if contender == "sparse" else params["dense_batch"])
    model = build_decoder(contender, params).train()
    points, features, gt = make_inputs(
        batch=batch, input_points=int(params["input_points"]), target_points=int(params["target_points"]),
        in_channels=int(params["in_channels"]), seed=int(params["seed"]),
    )  # fmt: skip
    features.requires_grad_()
    targets = model.occupancy_targets(gt)
    tiny = slice(0, 1), slice(0, 16)
    train_step(model, points[tiny], features[tiny].detach().requires_grad_(), model.occupancy_targets(gt[tiny]))
    load_before = os.getloadavg()[0]
    memory.mark_inputs_allocated()
    for _ in range(warmup):
        train_step(model, points, features, targets)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out, loss = train_step(model, points, features, targets)
        times.append(time.perf_counter() - start)
    return {
        "times_s": times,
        "check": {
            "batch_measured": batch,
            "candidates_per_sample": [level.coords.shape[0] / batch for level in out.levels],
            "kept_voxels_per_sample": float(out.lengths.sum()) / POINTS_PER_VOXEL / batch,
            "loss": float(loss),
            "recompute": model.recompute,
            "loadavg_before_after": [load_before, os.getloadavg()[0]],
            "malloc_env": {k: os.environ.get(k) for k in ALLOCATORS["mmap threshold 64 KB"]},  # what the worker got
        },
    }


def batch_equivalent(result: dict, batch: int) -> tuple[float, float, float, float, bool]:
    """(median s, min s, max s, peak MB) scaled to `batch` from the batch it was measured at, and whether scaled."""
    factor = batch / result["check"]["batch_measured"]
    t = result["timing"]
    return (
        t["median_s"] * factor,
        t["min_s"] * factor,
        t["max_s"] * factor,
        result["peak_extra_mb"] * factor,
        factor != 1,
    )


def markdown(report: dict) -> str:
    """This suite's section: environment, one row per case and contender, ratios against the targets."""
    env = report["environment"]
    lines = [
        f"## {report['title']}",
        "",
        f"- date: {env['date']}; CPU: {env['cpu']} ({env['cpu_count']} logical cores); threads: {env['threads']}",
        f"- torch {env['torch']}, spconv {env['spconv']}; command: `{env['command']}`",
        (
            f"- inputs: per sample a sphere / box / cylinder / flat box in [-0.5, 0.5]^3, {INPUT_POINTS} noisy surface "
            f"points with {IN_CHANNELS} random feature channels; targets from {TARGET_POINTS} exact surface samples; "
            "training-mode step (keep = predicted OR occupied; at initialisation almost nothing is predicted, so the "
            "active sets are the ground truth's, a trained decoder's operating point); BCE + point term, backward."
        ),
        (
            "- each contender runs in a fresh process per round (rounds alternate the order); time = median over all "
            "timed steps, spread = [min, max] and IQR; peak extra memory = peak RSS minus RSS after inputs and a "
            "16-point library warm-up. Load average (1 min) before/after the last round is listed: the 2 cores are shared."
        ),
    ]
    if env["quick"]:
        lines.append("- **quick mode: tiny sizes, a smoke test, not a measurement**")
    lines += [
        "",
        "| R | allocator, option | contender | batch run | median (s) | min .. max (s) | IQR (s) | n | peak extra MB | candidates / sample per level (fine..coarse) | speed-up | memory ratio | target (time / memory) | load |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |",
    ]  # fmt: skip
    for case in report["cases"]:
        p, results = case["params"], case["results"]
        r, batch, allocator = p["resolution"], p["batch"], p.get("allocator", "glibc default")
        if p.get("recompute"):
            allocator += ", recompute"
        scaled = {name: batch_equivalent(res, batch) for name, res in results.items()}
        for name, res in results.items():
            median, low, high, peak, extrapolated = scaled[name]
            check, t = res["check"], res["timing"]
            note = f" (*extrapolated x{batch / check['batch_measured']:g} from batch {check['batch_measured']}*)"
            speedup = memory_ratio = target = ""
            if name == "sparse" and "dense" in scaled:
                speedup = f"{scaled['dense'][0] / median:.1f}x"
                memory_ratio = f"{scaled['dense'][3] / max(peak, 1e-9):.1f}x"
                if r in TARGETS and not env["quick"]:
                    want_t, want_m = TARGETS[r]
                    ok_t = scaled["dense"][0] / median >= want_t
                    ok_m = scaled["dense"][3] / max(peak, 1e-9) >= want_m
                    target = (
                        f">= {want_t}x / >= {want_m}x: {'met' if ok_t else 'MISSED'} / {'met' if ok_m else 'MISSED'}"
                    )
            candidates = " / ".join(f"{v:.0f}" for v in check["candidates_per_sample"])
            load = " / ".join(f"{v:.1f}" for v in check["loadavg_before_after"])
            lines.append(
                f"| {r} | {allocator} | {name}{note if extrapolated else ''} | {check['batch_measured']} | {median:.3f} | "
                f"{low:.3f} .. {high:.3f} | {t['iqr_s'] * batch / check['batch_measured']:.3f} | {t['n']} | {peak:.0f} | "
                f"{candidates} | {speedup} | {memory_ratio} | {target} | {load} |"
            )
        if results.get("dense", {}).get("check", {}).get("batch_measured", batch) != batch:
            lines.append(
                f"| {r} | {allocator} | dense at batch {batch}: *infeasible* (estimated peak {p['dense_estimate_gb']:.1f} GB > "
                f"bound {p['memory_bound_gb']:g} GB) | | | | | | | | | | | |"
            )
    lines += [
        "",
        (
            "Speed-up and memory ratio = dense / sparse at batch 4 (dense values marked *extrapolated* are measured at "
            "batch 1 and multiplied by 4). Targets from DESIGN.md section 5. Candidates are the voxels each level scores "
            "(dense: every voxel of the grid). Allocator: `mmap threshold 64 KB` = the workers ran with "
            "`MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=65536` (glibc returns freed blocks above 64 KB at once), "
            "so the peak is the step's live working set rather than the heap's retained high-water mark. `recompute` = "
            "both decoders built with `recompute=True` (`model.decoder.recompute`: norm + ReLU outputs recomputed in the "
            "backward pass instead of kept)."
        ),
    ]
    return "\n".join(lines) + "\n"
