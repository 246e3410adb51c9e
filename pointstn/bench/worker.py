"""Child process of the benchmark runner: times one contender of one case and writes JSON.

Usage: python -m pointstn.bench.worker '<json job>' <result path>

The job is {"suite", "contender", "params", "warmup", "repeats", "threads"}. The suite's
`measure(contender, params, warmup=, repeats=, memory=)` allocates its inputs, calls
`memory.mark_inputs_allocated()`, warms up, times, and returns a JSON-able dict; the worker adds
the peak extra memory: the process's peak RSS (ru_maxrss) minus its RSS right after the inputs were
allocated.
"""

from __future__ import annotations

import json
import resource
import sys


class MemoryProbe:
    """Resident memory of this process, in MB."""

    def __init__(self) -> None:
        self.after_inputs_mb: float | None = None

    @staticmethod
    def current_mb() -> float:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20

    @staticmethod
    def peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KB

    def mark_inputs_allocated(self) -> None:
        self.after_inputs_mb = self.current_mb()


def main(argv: list[str]) -> int:
    job, result_path = json.loads(argv[0]), argv[1]
    import torch

    from pointstn.allocator import tune_allocator
    from pointstn.bench.runner import SUITES

    allocator = tune_allocator()  # as the command line runs (a case's worker_env may choose other settings)

    torch.set_num_threads(int(job["threads"]))
    probe = MemoryProbe()
    result = SUITES[job["suite"]].measure(
        job["contender"], job["params"], warmup=int(job["warmup"]), repeats=int(job["repeats"]), memory=probe
    )
    baseline = probe.after_inputs_mb if probe.after_inputs_mb is not None else 0.0
    result["rss_after_inputs_mb"] = baseline
    result["peak_extra_mb"] = max(0.0, probe.peak_mb() - baseline)
    result["threads"] = torch.get_num_threads()
    result["allocator"] = allocator
    with open(result_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
