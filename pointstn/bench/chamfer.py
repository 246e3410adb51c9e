"""Chamfer suite: pointstn's Chamfer vs a dense chunked reference (and PyTorch3D when importable).

Case: batch 8, two clouds of P uniform points each, float32, norm 2, forward + backward of the
default (mean, mean) loss. Contenders:

- `pointstn-kdtree`: `chamfer_distance(backend="kdtree")`, what "auto" picks on CPU (pykdtree for
  the Euclidean norm);
- `pointstn-kdtree-scipy`: the same with `POINTSTN_KDTREE=scipy` (scipy's cKDTree, the search before
  pykdtree);
- `pointstn-bruteforce`: `chamfer_distance(backend="bruteforce")`, chunked GEMM + min in torch;
- `pytorch3d`: `pytorch3d.loss.chamfer_distance`, only when importable. Otherwise the table quotes
  PyTorch3D's CPU figures measured earlier on this kind of machine (DESIGN.md section 4) and labels
  them *quoted, not measured here*.

Agreement: every contender reports its per-cloud loss values and per-cloud gradient norms; the
table gives the largest relative difference to the first contender.
"""

from __future__ import annotations

import os
import time

NAME = "chamfer"
TITLE = "Chamfer distance, forward + backward (batch 8, float32, norm 2)"
BATCH = 8
SIZES = (2048, 16384)
QUICK_SIZES = (64, 256)
# PyTorch3D 0.7.9's CPU kernel, forward + backward, batch 8, 2 threads, on this kind of machine.
PYTORCH3D_QUOTED_S = {2048: 0.215, 16384: 10.76}
TARGET_SPEEDUP = 10.0


def _pytorch3d_available() -> bool:
    try:
        import pytorch3d.loss  # noqa: F401
    except ImportError:
        return False
    return True


def cases(quick: bool) -> list[dict]:
    """The measurement plan; slow contenders get fewer repeats at the large size."""
    out = []
    for points in QUICK_SIZES if quick else SIZES:
        slow_repeats = 1 if points > 4096 else 3
        contenders = [
            {"name": "pointstn-kdtree", "warmup": 1 if quick else 2, "repeats": 2 if quick else 7},
            {"name": "pointstn-kdtree-scipy", "warmup": 1 if quick else 2, "repeats": 2 if quick else 7},
            {"name": "pointstn-bruteforce", "warmup": 1, "repeats": 2 if quick else slow_repeats},
        ]
        if _pytorch3d_available():
            contenders.append({"name": "pytorch3d", "warmup": 1, "repeats": 2 if quick else slow_repeats})
        out.append({
            "case": f"{points} points",
            "params": {"batch": BATCH, "points": points, "seed": 0},
            "rounds": 1 if quick else 3,
            "contenders": contenders,
        })  # fmt: skip
    return out


def measure(contender: str, params: dict, *, warmup: int, repeats: int, memory) -> dict:
    """Time `repeats` forward + backward passes after `warmup` ones (runs in the worker process)."""
    import torch

    step = _step_function(contender)
    g = torch.Generator().manual_seed(int(params["seed"]))
    shape = (int(params["batch"]), int(params["points"]), 3)
    x = torch.rand(shape, generator=g).requires_grad_()
    y = torch.rand(shape, generator=g).requires_grad_()
    memory.mark_inputs_allocated()
    for _ in range(warmup):
        step(x, y, "mean")
    times = []
    for _ in range(repeats):
        x.grad = y.grad = None
        start = time.perf_counter()
        step(x, y, "mean")
        times.append(time.perf_counter() - start)
    x.grad = y.grad = None
    per_cloud = step(x, y, None)
    grad_norms = torch.cat([x.grad.flatten(1).norm(dim=1), y.grad.flatten(1).norm(dim=1)])
    return {"times_s": times, "check": {"per_cloud": per_cloud.tolist(), "grad_norms": grad_norms.tolist()}}


def _step_function(contender: str):
    if contender == "pytorch3d":
        from pytorch3d.loss import chamfer_distance as p3d_chamfer

        def run(x, y, batch_reduction):
            loss, _ = p3d_chamfer(x, y, batch_reduction=batch_reduction)
            loss.sum().backward()
            return loss.detach()

        return run
    backends = {"pointstn-kdtree": "kdtree", "pointstn-kdtree-scipy": "kdtree", "pointstn-bruteforce": "bruteforce"}
    if contender not in backends:
        raise ValueError(f"unknown chamfer contender {contender!r}; valid choices: {', '.join(backends)}, pytorch3d")
    from pointstn.ops.chamfer import chamfer_distance
    from pointstn.ops.kdtree import KDTREE_ENV, pykdtree_available

    if contender == "pointstn-kdtree-scipy":
        os.environ[KDTREE_ENV] = "scipy"  # this worker process only
    if backends[contender] == "kdtree":  # imported before the memory baseline, not charged to the case
        import scipy.spatial  # noqa: F401

        pykdtree_available()

    def run(x, y, batch_reduction):
        loss, _ = chamfer_distance(x, y, batch_reduction=batch_reduction, backend=backends[contender])
        loss.sum().backward()
        return loss.detach()

    return run


def max_rel_diff(reference: list[float], other: list[float]) -> float:
    """Largest |a - b| / max(|a|, tiny) over paired values."""
    return max((abs(a - b) / max(abs(a), 1e-30) for a, b in zip(reference, other)), default=0.0)


def markdown(report: dict) -> str:
    """This suite's section: environment, one row per case and contender, the agreement check."""
    env = report["environment"]
    lines = [
        f"## {report['title']}",
        "",
        f"- date: {env['date']}; CPU: {env['cpu']} ({env['cpu_count']} logical cores); threads: {env['threads']}",
        (
            f"- torch {env['torch']}, scipy {env['scipy']}, numpy {env['numpy']}, spconv {env['spconv']}, "
            f"pytorch3d {env['pytorch3d'] or 'not installed'}"
        ),
        f"- command: `{env['command']}`",
        (
            f"- machine load average (1, 5, 15 min) at start / end: {env.get('load_average_start')} / "
            f"{env.get('load_average_end')} (the machine is shared; load above 0 means other processes competed)"
        ),
        (
            "- each contender runs in a fresh process per round (warm-up first, rounds alternate the contender "
            "order); time = median over all timed repeats, spread = [min, max] and IQR; peak extra memory = "
            "peak RSS of the process minus its RSS after the inputs were allocated."
        ),
    ]
    if env["quick"]:
        lines.append("- **quick mode: tiny sizes, a smoke test, not a measurement**")
    lines += [
        "",
        "| points | contender | median (s) | min .. max (s) | IQR (s) | n | peak extra MB | speed-up vs PyTorch3D CPU | max rel diff (values / grads) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]  # fmt: skip
    for case in report["cases"]:
        points = case["params"]["points"]
        results = case["results"]
        first = next(iter(results.values()))["check"]
        p3d = results.get("pytorch3d", {}).get("timing", {}).get("median_s")
        p3d_label = "measured"
        if p3d is None and points in PYTORCH3D_QUOTED_S:
            p3d, p3d_label = PYTORCH3D_QUOTED_S[points], "quoted"
        for name, r in results.items():
            t = r["timing"]
            speedup = f"{p3d / t['median_s']:.1f}x ({p3d_label})" if p3d else "n/a"
            agree = (
                f"{max_rel_diff(first['per_cloud'], r['check']['per_cloud']):.1e} / "
                f"{max_rel_diff(first['grad_norms'], r['check']['grad_norms']):.1e}"
            )
            lines.append(
                f"| {points} | {name} | {t['median_s']:.4f} | {t['min_s']:.4f} .. {t['max_s']:.4f} | "
                f"{t['iqr_s']:.4f} | {t['n']} | {r['peak_extra_mb']:.0f} | {speedup} | {agree} |"
            )
        if "pytorch3d" not in results and points in PYTORCH3D_QUOTED_S:
            lines.append(
                f"| {points} | PyTorch3D 0.7.9 CPU kernel (*quoted from DESIGN.md, not measured here*) | "
                f"{PYTORCH3D_QUOTED_S[points]:.3f} | | | | | 1.0x (quoted) | |"
            )
    lines += [
        "",
        (
            f"Target: pointstn >= {TARGET_SPEEDUP:.0f}x faster than PyTorch3D's CPU kernel at 2048 and 16384 points "
            "with equal values. PyTorch3D is not installable here (DESIGN.md section 4), so its row is the figure "
            "measured earlier on this kind of machine, *quoted, not measured in this run*; speed-ups marked "
            "'quoted' divide that figure by our median. Agreement columns compare each contender's per-cloud "
            "values and per-cloud gradient norms with the first contender's."
        ),
    ]
    return "\n".join(lines) + "\n"
