"""Where a training step and an inference call of a config spend their time (torch.profiler, CPU).

    python -m pointstn.bench.profile configs/base.yaml --out docs/BENCHMARKS.md

Builds the config's model with fresh weights, makes one synthetic batch (`pointstn.bench.model.
synthetic_batch`: real-looking ground truth, random images), runs warm-up steps, then profiles
`steps` training steps (forward, loss, backward, clip, AdamW) and `steps` batch-1 inference calls.
Inference runs the decoder on the ground-truth active set (as `pointstn.bench.model` does for
"trained"), since a fresh model's occupancy heads keep only the floor of voxels.

The report groups profiler rows into the model's stages by the module that ran them (record_function
scopes around each stage) and lists the top operators by self CPU time; the Markdown goes into
docs/BENCHMARKS.md's `profile` section. Profiles are relative: the machine is shared, so compare
rows within one run, not across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import torch

STAGES = ("backbone", "localization", "coarse_head", "sampler", "decoder")
SECTION = "profile"


@contextlib.contextmanager
def stage_scopes(model) -> Iterator[None]:
    """Wrap each stage's forward in `torch.profiler.record_function(stage)` while the context is open."""
    handles = []
    for name in STAGES:
        module = getattr(model, name, None)
        if module is None:
            continue
        scope = {}

        def enter(_module, _args, name=name, scope=scope):
            scope["fn"] = torch.profiler.record_function(f"stage::{name}")
            scope["fn"].__enter__()

        def leave(_module, _args, _output, scope=scope):
            scope.pop("fn").__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _stage_rows(events, steps: int) -> list[tuple[str, float]]:
    """(stage, ms per step of forward CPU time) for every stage scope in `events`."""
    totals = {e.key: e.cpu_time_total / 1000.0 / steps for e in events if e.key.startswith("stage::")}
    return [(name, totals.get(f"stage::{name}", 0.0)) for name in STAGES if f"stage::{name}" in totals]


def _op_rows(events, steps: int, top: int) -> list[tuple[str, float, int]]:
    """(operator, self ms per step, calls per step), the `top` most expensive by self CPU time."""
    ops = [e for e in events if not e.key.startswith("stage::") and not e.key.startswith("ProfilerStep")]
    ops.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [(e.key, e.self_cpu_time_total / 1000.0 / steps, round(e.count / steps)) for e in ops[:top]]


def profile_config(config_path: str | Path, *, steps: int = 3, warmup: int = 2, threads: int = 2, top: int = 15,
                   overrides: tuple[str, ...] = ()) -> dict:
    """Profile `steps` training steps and batch-1 inference calls; returns a JSON-able report."""
    from pointstn.bench.model import (
        build,
        ground_truth_arguments,
        inference_step,
        synthetic_batch,
        train_step,
    )
    from pointstn.models.losses import LossWeights

    torch.set_num_threads(threads)
    config, model = build("pointstn", {"config": str(Path(config_path).resolve()), "seed": 0}, extra_overrides=overrides)
    images, targets = synthetic_batch(batch=config.train.batch_size, image_size=config.data.image_size,
                                      gt_points=config.data.num_gt_points, seed=0)
    ground_truth = ground_truth_arguments(config, targets)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)
    weights = LossWeights.from_config(config.loss)
    report = {"config": str(config_path), "overrides": list(overrides), "threads": threads, "steps": steps,
              "batch_size": config.train.batch_size}

    def train_once():
        train_step(model, optimizer, images, targets, ground_truth=ground_truth, weights=weights,
                   grad_clip=config.train.grad_clip, fine_points=config.model.num_output_points)

    one = images[:1]
    one_truth = {k: v[:1] for k, v in ground_truth.items()}

    def infer_once():
        inference_step(model, one, ground_truth=one_truth, active_set="trained")

    for name, fn, mode in (("train", train_once, True), ("infer", infer_once, False)):
        model.train(mode)
        if not mode and model.decoder is not None:
            model.decoder.train(True)  # ground-truth active set, layers otherwise in eval mode
        for _ in range(warmup):
            fn()
        with stage_scopes(model), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            wall = (time.perf_counter() - start) / steps
        events = prof.key_averages()
        report[name] = {"wall_ms": 1000.0 * wall, "stages": _stage_rows(events, steps),
                        "ops": _op_rows(events, steps, top)}
    return report


def markdown(report: dict, *, command: str, date: str) -> str:
    lines = [
        "## Profile: a training step and a batch-1 inference call",
        "",
        f"`{command}` ({date}; config `{report['config']}`"
        + (f" with {' '.join(report['overrides'])}" if report["overrides"] else "")
        + f", batch {report['batch_size']} for training, {report['threads']} threads, {report['steps']} profiled "
        "steps after warm-up). Stage rows are forward time inside each stage (backward is in the operator "
        "rows); operator rows are self CPU time. The profiler adds overhead: compare rows, not absolute times.",
        "",
    ]
    for name, title in (("train", "training step"), ("infer", "inference, batch 1")):
        part = report[name]
        lines += [f"### {title}: {part['wall_ms']:.0f} ms per call (profiled)", "",
                  "| stage (forward) | ms |", "| --- | --- |"]
        lines += [f"| {stage} | {ms:.1f} |" for stage, ms in part["stages"]]
        lines += ["", "| operator | self ms | calls |", "| --- | --- | --- |"]
        lines += [f"| `{op}` | {ms:.1f} | {calls} |" for op, ms, calls in part["ops"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import datetime as dt
    import shlex
    import sys

    from pointstn.allocator import tune_allocator
    from pointstn.bench.runner import write_section

    parser = argparse.ArgumentParser(prog="python -m pointstn.bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="Markdown file whose `profile` section is replaced")
    args = parser.parse_args(argv)
    tune_allocator()  # profile what the command line runs (pointstn/allocator.py)
    report = profile_config(args.config, steps=args.steps, threads=args.threads, overrides=tuple(args.overrides))
    command = "python -m pointstn.bench.profile " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = markdown(report, command=command, date=dt.date.today().isoformat())
    print(text)
    if args.out:
        write_section(Path(args.out), SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
