"""The lines every benchmark suite's Markdown section starts with."""

from __future__ import annotations


def section_header(report: dict, *, versions: bool = True) -> list[str]:
    """The first lines of a suite's section: title, date, CPU, threads, command and load average
    (`versions`: also the CPU count and the torch/spconv versions, on lines of their own)."""
    env = report["environment"]
    load = f"{env.get('load_average_start')} / {env.get('load_average_end')}"
    allocators = sorted({result["allocator"] for case in report.get("cases", ())
                         for result in case.get("results", {}).values() if "allocator" in result})
    malloc = []
    if allocators:
        malloc.append(f"- malloc in the worker processes: {'; '.join(allocators)} (`pointstn/allocator.py`)")
    if not versions:
        return [f"## {report['title']}", "",
                f"- date: {env['date']}; CPU: {env['cpu']}; threads: {env['threads']}; command: `{env['command']}`",
                f"- load average at start / end: {load}", *malloc]
    return [f"## {report['title']}", "",
            f"- date: {env['date']}; CPU: {env['cpu']} ({env['cpu_count']} logical cores); threads: {env['threads']}",
            f"- torch {env['torch']}, spconv {env['spconv']}; command: `{env['command']}`",
            f"- load average (1, 5, 15 min) at start / end: {load}", *malloc]
