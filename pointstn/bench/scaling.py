"""Scaling suite: how a training step's time and memory grow with voxel resolution, output points and batch.

One factor at a time from the default config (`configs/base.yaml`; quick mode `configs/smoke.yaml`):

- voxel resolution R of the decoder's finest level: 16, 32 (default), 64;
- output points, through K = `model.decoder.points_per_voxel`: 1, 4 (default), 16 (the fine cloud
  has K points per kept voxel; `num_output_points` only cuts the predictor's output afterwards);
- batch size: 1, 4, 16 (default).

Each factor is one case whose values are its contenders, so the values alternate in fresh processes
round by round. The workload is the model suite's training step (`pointstn.bench.model.train_step`:
forward with the ground truth, loss, backward, clipping, AdamW) on the same synthetic inputs; in
training the decoder keeps the ground-truth shell, so its active sets are a trained decoder's and
grow like the object's surface (~r^2 voxels per sample), not the grid (r^3). Peak extra memory is
the process's peak RSS minus its RSS after the model, optimizer and inputs exist.

`figure` draws time per step and peak extra memory against each factor (log-log) into a PNG next to
the Markdown file (`docs/BENCHMARKS.md` -> `docs/benchmarks_scaling.png`).
"""

from __future__ import annotations

from pathlib import Path

from pointstn.bench.header import section_header

NAME = "scaling"
TITLE = "Scaling: training step time and memory vs voxel resolution, output points and batch size"
FACTORS = {  # factor -> (label, config key or "batch", values, quick values)
    "resolution": ("voxel resolution R", "model.decoder.resolution", (16, 32, 64), (8, 16)),
    "points_per_voxel": ("points per voxel K", "model.decoder.points_per_voxel", (1, 4, 16), (1, 2)),
    "batch": ("batch size", "batch", (1, 4, 16), (1, 2)),
}
QUICK = {"batch": 2, "gt_points": 1024}


def figure_path(out_md: Path) -> Path:
    """The PNG beside a Markdown file: <folder>/<stem lower-cased>_scaling.png."""
    out_md = Path(out_md)
    return out_md.with_name(f"{out_md.stem.lower()}_scaling.png")


def cases(quick: bool) -> list[dict]:
    """One case per factor; its values are the contenders, every other setting stays at the config's."""
    from pointstn.bench.model import CONFIG, QUICK_CONFIG, load_experiment

    config_name = QUICK_CONFIG if quick else CONFIG
    config = load_experiment(config_name)
    default_batch = QUICK["batch"] if quick else config.train.batch_size
    out = []
    for factor, (label, key, values, quick_values) in FACTORS.items():
        variants = {}
        for value in quick_values if quick else values:
            batch = value if key == "batch" else default_batch
            overrides = [] if key == "batch" else [f"{key}={value}"]
            variants[f"{factor}={value}"] = {"value": value, "batch": batch, "overrides": overrides}
        out.append({
            "case": label,
            "params": {"factor": factor, "config": config_name, "variants": variants, "seed": 0,
                       "gt_points": QUICK["gt_points"] if quick else None, "default_batch": default_batch},
            "rounds": 1 if quick else 2,
            "contenders": [{"name": name, "warmup": 1, "repeats": 1 if quick else 2} for name in variants],
        })  # fmt: skip
    return out


def measure(contender: str, params: dict, *, warmup: int, repeats: int, memory) -> dict:
    """Time training steps of one variant (runs in the worker process)."""
    from pointstn.bench import model

    variants = params["variants"]
    if contender not in variants:
        raise ValueError(f"unknown scaling variant {contender!r}; valid choices: {', '.join(variants)}")
    variant = variants[contender]
    step_params = {"config": params["config"], "gt_points": params["gt_points"], "seed": params["seed"],
                   "mode": "train", "batch": variant["batch"]}
    result = model.measure("pointstn", step_params, warmup=warmup, repeats=repeats, memory=memory,
                           extra_overrides=tuple(variant["overrides"]))
    result["check"]["value"] = variant["value"]
    return result


def rows(case: dict) -> list[dict]:
    """Per value of the case's factor (ascending): value, batch, median / min / max step s, ms per image, MB."""
    out = []
    for result in case["results"].values():
        t, check = result["timing"], result["check"]
        out.append({
            "value": check["value"], "batch": check["batch"], "median_s": t["median_s"], "min_s": t["min_s"],
            "max_s": t["max_s"], "n": t["n"], "ms_per_image": 1000 * t["median_s"] / check["batch"],
            "peak_extra_mb": result["peak_extra_mb"], "peak_rss_mb": check["peak_rss_mb"],
            "points": check["output_points_per_sample"], "candidates": check["finest_candidates_per_sample"],
        })  # fmt: skip
    return sorted(out, key=lambda r: r["value"])


def figure(report: dict, *, out_md: Path) -> Path:
    """Plot time per step and peak extra memory against every factor (log-log; a linear y axis for a panel
    with a value <= 0); returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    panels = report["cases"]
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 6.5), squeeze=False)
    for column, case in enumerate(panels):
        data = rows(case)
        values = [r["value"] for r in data]
        time_ax, memory_ax = axes[0][column], axes[1][column]
        median = [r["median_s"] for r in data]
        spread = [[m - r["min_s"] for m, r in zip(median, data)], [r["max_s"] - m for m, r in zip(median, data)]]
        memory = [r["peak_extra_mb"] for r in data]
        time_ax.errorbar(values, median, yerr=spread, marker="o", capsize=3)
        memory_ax.plot(values, memory, marker="s", color="tab:red")
        for ax, heights in ((time_ax, median), (memory_ax, memory)):
            ax.set_xscale("log", base=2)
            # a log axis cannot show 0 (quick mode's tiny cases can add no measurable memory)
            ax.set_yscale("log" if min(heights) > 0 else "linear")
            ax.set_xticks(values, [str(v) for v in values])
            ax.xaxis.set_minor_formatter(FormatStrFormatter(""))
            for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis(FormatStrFormatter("%.4g"))  # plain numbers, not 8.5 x 10^1
            ax.grid(True, which="both", alpha=0.3)
        time_ax.set_title(case["case"])
        time_ax.set_ylabel("training step (s)")
        memory_ax.set_ylabel("peak extra memory (MB)")
        memory_ax.set_xlabel(case["case"])
    env = report["environment"]
    quick = " - QUICK MODE, not a measurement" if env["quick"] else ""
    fig.suptitle(f"pointstn training step, one factor at a time from configs/{panels[0]['params']['config']}"
                 f" (threads: {env['threads']}){quick}", fontsize=10)
    fig.tight_layout()
    path = figure_path(out_md)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(report: dict) -> str:
    """This suite's section: environment, one table row per factor value, the plot when it was drawn."""
    env = report["environment"]
    config = report["cases"][0]["params"]["config"] if report["cases"] else "base.yaml"
    lines = [
        *section_header(report),
        (
            f"- one factor at a time from `configs/{config}`; a step = forward with the ground truth + loss + backward + "
            "clipping + AdamW, on random images and procedural ground-truth surfaces (the model suite's inputs); the "
            "decoder keeps the ground-truth shell (training), so its work follows the surface, ~r^2 voxels per sample."
        ),
        (
            "- each value runs in a fresh process per round (rounds alternate the order); median over all timed "
            "steps, spread = [min, max]; peak extra = peak RSS minus RSS after the model, optimizer and inputs exist."
        ),
    ]
    if env["quick"]:
        lines.append("- **quick mode: tiny sizes, a smoke test, not a measurement**")
    lines += [
        "",
        "| factor | value | batch | step median (s) | min .. max (s) | n | ms / image | output points / sample | finest candidates / sample | peak extra MB | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    for case in report["cases"]:
        for r in rows(case):
            lines.append(
                f"| {case['case']} | {r['value']} | {r['batch']} | {r['median_s']:.3f} | {r['min_s']:.3f} .. "
                f"{r['max_s']:.3f} | {r['n']} | {r['ms_per_image']:.0f} | {r['points']:.0f} | {r['candidates']:.0f} | "
                f"{r['peak_extra_mb']:.0f} | {r['peak_rss_mb']:.0f} |"
            )
    if report.get("figure"):
        lines += ["", f"![training step time and memory vs each factor]({report['figure']})"]
    return "\n".join(lines) + "\n"
