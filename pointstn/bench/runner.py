"""Benchmark runner: fresh process per measurement, contenders side by side, alternating rounds.

A suite is a module with:

- `NAME` (str) and `TITLE` (str);
- `cases(quick: bool) -> list[dict]`: each {"case": label, "params": JSON-able dict, "rounds": int,
  "contenders": [{"name", "warmup", "repeats"}, ...]}; `params["worker_env"]`, if present, is a
  {name: value} of environment variables set in that case's worker processes (e.g. glibc's malloc
  tunables, which are read at process start);
- `measure(contender, params, *, warmup, repeats, memory) -> dict` (runs in the child process,
  see `pointstn.bench.worker`), returning at least {"times_s": [...]} plus suite-specific checks;
- `markdown(report: dict) -> str`: the suite's section of docs/BENCHMARKS.md;
- optionally `figure(report: dict, *, out_md: Path) -> Path`: draws a PNG next to the Markdown file
  and returns its path; `markdown` then finds its file name in `report["figure"]`.

For every case, each round runs every contender once, each in a fresh `python -m
pointstn.bench.worker` process (inputs allocated, warm-up, then timed repeats); the contender order
alternates between rounds so that drifting machine load does not favour one side. Timings of all
rounds are pooled: median, min, max and interquartile range are reported.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pointstn.bench import chamfer, data, decoder, memory, model, predict, scaling

SUITES = {"chamfer": chamfer, "decoder": decoder, "data": data, "model": model, "predict": predict, "memory": memory,
          "scaling": scaling}


CHECKPOINT_SUITES = ("predict",)  # suites that can measure a trained checkpoint (`run(checkpoint=...)`)


def run(
    suites: list[str] | tuple[str, ...],
    out_md: str | Path | None = None,
    out_json: str | Path | None = None,
    quick: bool = False,
    threads: int = 2,
    command: str | None = None,
    checkpoint: str | Path | None = None,
) -> dict:
    """Run the named suites and return the report; optionally write JSON and Markdown.

    Args:
        suites: names from `SUITES`.
        out_md: Markdown file; only each suite's own marked section is replaced (created if absent).
        out_json: JSON file; only each suite's own entry is replaced (created if absent).
        quick: tiny sizes and a single round (a smoke test, not a measurement).
        threads: torch/scipy thread count in every child process.
        command: the command line to record (defaults to this process's argv).
        checkpoint: a trained checkpoint for the suites that can measure one (those whose `cases`
            takes `checkpoint`: predict); otherwise they use a random-weight model of the default config.

    Returns:
        {"environment": {...}, "suites": {name: {"title", "cases": [...]}}}.
    """
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown benchmark suite(s) {unknown}; valid choices: {', '.join(SUITES)}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    env = environment(threads=threads, quick=quick, command=command)
    report = {"environment": env, "suites": {}}
    for name in suites:
        suite = SUITES[name]
        options = {"checkpoint": str(checkpoint)} if checkpoint is not None and name in CHECKPOINT_SUITES else {}
        cases = [_run_case(name, case, threads=threads) for case in suite.cases(quick, **options)]
        report["suites"][name] = {"title": suite.TITLE, "cases": cases}
    env["load_average_end"] = _load_average()
    if out_json is not None:
        _merge_json(Path(out_json), report)
    if out_md is not None:
        for name in suites:
            section = {"environment": env, **report["suites"][name]}
            if hasattr(SUITES[name], "figure"):  # a plot beside the Markdown, linked by a relative name
                section["figure"] = SUITES[name].figure(section, out_md=Path(out_md)).name
            write_section(Path(out_md), name, SUITES[name].markdown(section))
    return report


def environment(*, threads: int, quick: bool, command: str | None) -> dict:
    """Versions, CPU, date, thread count and the exact command of this run."""
    from importlib import metadata

    import torch

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    spconv = next((v for d in ("spconv-cu120", "spconv") if (v := version(d))), None)
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command or " ".join(shlex.quote(a) for a in _original_argv()),
        "threads": threads,
        "quick": quick,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "spconv": spconv,
        "scipy": version("scipy"),
        "numpy": version("numpy"),
        "pytorch3d": version("pytorch3d"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_start": _load_average(),  # other processes on a shared machine skew timings
    }


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages of the machine (None where unsupported)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _original_argv() -> list[str]:
    """The command line as typed (`python -m ...` included), with the interpreter shortened."""
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    argv[0] = Path(argv[0]).name
    return argv


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _run_case(suite: str, case: dict, *, threads: int) -> dict:
    contenders = case["contenders"]
    runs = {c["name"]: [] for c in contenders}
    for round_index in range(case["rounds"]):
        order = contenders if round_index % 2 == 0 else list(reversed(contenders))
        for contender in order:
            job = {
                "suite": suite, "contender": contender["name"], "params": case["params"],
                "warmup": contender["warmup"], "repeats": contender["repeats"], "threads": threads,
            }  # fmt: skip
            runs[contender["name"]].append(_spawn(job))
    results = {}
    for name, rounds in runs.items():
        times = [t for r in rounds for t in r["times_s"]]
        results[name] = {
            "timing": timing_summary(times),
            "peak_extra_mb": max(r["peak_extra_mb"] for r in rounds),
            "threads": rounds[0]["threads"],
            "allocator": rounds[0]["allocator"],  # pointstn.allocator.tune_allocator's answer in the worker
            "check": rounds[-1].get("check", {}),
        }
    return {"case": case["case"], "params": case["params"], "results": results}


def _spawn(job: dict) -> dict:
    """Run one job in a fresh interpreter and return its JSON result."""
    with tempfile.TemporaryDirectory(prefix="pointstn-bench-") as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]), MKL_NUM_THREADS=str(job["threads"]),
                   **job["params"].get("worker_env", {}))
        cmd = [sys.executable, "-m", "pointstn.bench.worker", json.dumps(job), str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"benchmark worker failed for {job['contender']} ({job['params']}):\n{proc.stderr}")
        return json.loads(out.read_text())


def timing_summary(times: list[float]) -> dict:
    """Median, min, max, interquartile range and count of a list of durations in seconds."""
    if not times:
        raise ValueError("no timings to summarize")
    ordered = sorted(times)
    q1, _, q3 = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else (ordered[0],) * 3
    return {
        "median_s": statistics.median(ordered),
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "iqr_s": q3 - q1,
        "n": len(ordered),
        "times_s": ordered,
    }


def begin_marker(suite: str) -> str:
    return f"<!-- bench:{suite}:begin -->"


def end_marker(suite: str) -> str:
    return f"<!-- bench:{suite}:end -->"


def write_section(path: Path, suite: str, markdown: str) -> None:
    """Replace only `suite`'s marked section of `path` (appending it, or creating the file, if absent)."""
    block = f"{begin_marker(suite)}\n{markdown.rstrip()}\n{end_marker(suite)}\n"
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nGenerated by `pointstn benchmark`; each suite owns its marked section.\n"
    )
    begin, end = begin_marker(suite), end_marker(suite)
    if begin in text and end in text and text.index(begin) < text.index(end):
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + block + (("\n" + tail) if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _merge_json(path: Path, report: dict) -> None:
    """Write `report`, keeping other suites' entries of an existing file."""
    merged = {"suites": {}}
    if path.exists():
        try:
            merged = json.loads(path.read_text())
        except json.JSONDecodeError:
            merged = {"suites": {}}
    for name, suite in report["suites"].items():
        merged.setdefault("suites", {})[name] = {"environment": report["environment"], **suite}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """`python -m pointstn.bench.runner chamfer --out-md docs/BENCHMARKS.md --out-json docs/BENCHMARKS.json`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pointstn.bench.runner", description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="+", choices=sorted(SUITES))
    parser.add_argument("--out-md", default=None)
    parser.add_argument("--out-json", default=None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    run(args.suites, out_md=args.out_md, out_json=args.out_json, quick=args.quick, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
