"""Training history: every logged row as CSV and JSON, and a PNG of the training/validation curves."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from pointstn.io.atomic import atomic_write_bytes, atomic_write_text


class History:
    """Rows of {step, phase ("train" | "val"), metric: value}; rewritten atomically on `save`."""

    def __init__(self, run_dir: Path, rows: list[dict[str, Any]] | None = None):
        self.run_dir = run_dir
        self.rows: list[dict[str, Any]] = list(rows or [])

    @staticmethod
    def load(run_dir: Path, *, up_to_step: int) -> History:
        """The history of an interrupted run, without rows past the checkpoint it resumes from."""
        path = run_dir / "history.json"
        rows = json.loads(path.read_text()) if path.is_file() else []
        return History(run_dir, [r for r in rows if r["step"] <= up_to_step])

    def add(self, step: int, phase: str, values: dict[str, float]) -> None:
        self.rows.append({"step": step, "phase": phase, **values})

    def save(self) -> None:
        atomic_write_text(self.run_dir / "history.json", json.dumps(self.rows, indent=1) + "\n", durable=False)
        columns = ["step", "phase", *sorted({k for r in self.rows for k in r} - {"step", "phase"})]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.run_dir / "history.csv", buffer.getvalue(), durable=False)

    def plot(self, *, metric: str) -> Path:
        """curves.png: training loss (log scale) and the validation `metric` against the step."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = [r for r in self.rows if r["phase"] == "train" and "total" in r]
        val = [r for r in self.rows if r["phase"] == "val" and metric in r]
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
        if train:
            left.plot([r["step"] for r in train], [r["total"] for r in train], label="total")
            for key in sorted(k for k in train[-1] if k.startswith("chamfer")):
                left.plot([r["step"] for r in train], [r.get(key, float("nan")) for r in train], label=key, lw=0.8)
            left.set_yscale("log")
            left.legend(fontsize=6)
        left.set(title="training loss", xlabel="step")
        if val:
            right.plot([r["step"] for r in val], [r[metric] for r in val], marker="o")
        right.set(title=f"validation {metric} (shape frame)", xlabel="step")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        plt.close(figure)
        path = self.run_dir / "curves.png"
        atomic_write_bytes(path, buffer.getvalue(), durable=False)
        return path
