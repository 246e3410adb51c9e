"""Where `f@1%` is lost inside the sparse decoder: its own voxel choice at each level against the truth's.

The decoder chooses voxels coarse to fine: a voxel a coarse level drops cannot be filled in below it,
and the finest level's points are the voxels' centres plus the point head's offsets. The breakdown
evaluates one model several times on the same images (shape frame, the evaluation's point count and
resampling), each time with the ground truth's voxels (labelled as in training, `target_frame`)
kept at some levels instead of the decoder's own choice:

- `model`: the decoder's own voxels at every level (what inference does);
- `true at R<c>-R<r>`: the truth's voxels at every level from the coarsest (resolution c) down to
  resolution r, the decoder's own below (so each row adds one level to the one above it);
- `true voxels, centre points`: the truth's voxels at every level, every point at its voxel's centre
  (what the point head's offsets add or cost on the right voxels).

Per level it also reports, for the model's own choice, how many voxels it kept, the share of them the
truth occupies (precision) and the share of the truth's voxels among its candidates that it kept
(recall of what the coarser levels left reachable). The true-voxel rows read the ground truth, so
they are bounds for diagnosis, not results.

It also reports how much the predicted rotation varies over the images (`rotation_spread_deg`, the
median angle between each image's rotation and their mean rotation). A spread near 0 means the
localization network predicts one rotation for every image, so the decoder's frame is fixed to the
camera's (viewer-centred) and its rotation carries no information about the object.

And how well the predicted rotation finds the object's up axis (`up_axis_error_deg`): the median angle
between the lines of the canonical +z axis in the camera frame under the predicted and the true
rotation (0-90 deg). Unlike the rotation error it means the same for every object, symmetric or not
(any symmetry of an upright object keeps its up axis as a line). Next to it, the same error of one
constant axis for every image, the truth's mean axis over these images (it reads the truth): a model
whose error is not below that one has not learned which way is up. The procedural datasets keep
every object upright (+z up) in the canonical frame; for other data the numbers mean what their
canonical +z means.

`family_breakdown` runs the whole breakdown once per object family (`pointstn diagnose --by-family`), to
tell, family by family, how much is lost to the voxel choice and how much to the points' placement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from pointstn.engine.evaluate import resample
from pointstn.errors import PointstnError
from pointstn.models.reconstructor import occupancy_truth
from pointstn.ops.metrics import cloud_metrics
from pointstn.ops.rotation import geodesic_angle

BATCH = 16


@contextlib.contextmanager
def true_voxels(decoder, levels) -> Iterator[None]:
    """While open, `decoder` keeps exactly the ground truth's voxels at `levels` (indices, 0 = finest)."""
    before = decoder.true_voxel_levels
    decoder.true_voxel_levels = frozenset(levels)
    try:
        yield
    finally:
        decoder.true_voxel_levels = before


@contextlib.contextmanager
def centre_points(decoder) -> Iterator[None]:
    """While open, the point head puts every point at its voxel's centre."""
    before = decoder.point_head.centres_only
    decoder.point_head.centres_only = True
    try:
        yield
    finally:
        decoder.point_head.centres_only = before


def variants(resolutions: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], bool]]:
    """name -> (levels that keep the true voxels, centre points), in report order."""
    coarsest = len(resolutions) - 1
    rows: dict[str, tuple[tuple[int, ...], bool]] = {"model": ((), False)}
    for finest_true in reversed(range(len(resolutions))):
        span = f"R{resolutions[coarsest]}" + (f"-R{resolutions[finest_true]}" if finest_true < coarsest else "")
        rows[f"true at {span}"] = (tuple(range(finest_true, coarsest + 1)), False)
    rows["true voxels, centre points"] = (tuple(range(coarsest + 1)), True)
    return rows


def level_breakdown(model, dataset, *, target_frame: str, num_pred_points: int, resample_how: str,
                    max_images: int | None = None) -> dict[str, Any]:
    """The breakdown (module docstring) over `dataset` (or `max_images` of it, at even strides).

    Returns {"f@1%": {variant: mean}, "levels": [{"resolution", "kept", "precision", "recall"}, ...]
    (coarsest first, means over images), "rotation_spread_deg": float, "up_axis_error_deg": {"model": float,
    "mean_true_axis": float}, "n_samples": N}.
    """
    decoder = getattr(model, "decoder", None)
    if decoder is None or not hasattr(decoder, "true_voxel_levels"):
        raise PointstnError("the breakdown needs a model with the sparse decoder (model.decoder.kind: sparse)")
    items = dataset
    if max_images is not None:
        if max_images < 1:
            raise PointstnError(f"max_images must be >= 1; got {max_images}")
        items = torch.utils.data.Subset(dataset, range(0, len(dataset), max(1, -(-len(dataset) // max_images))))
    if len(items) == 0:
        raise PointstnError("the breakdown needs at least one image")
    rows = variants(tuple(decoder.resolutions))
    sums = dict.fromkeys(rows, 0.0)
    level_sums = [{"kept": 0.0, "precision": 0.0, "recall": 0.0} for _ in decoder.resolutions]
    count, rotations, true_rotations = 0, [], []
    model.eval()
    loader = torch.utils.data.DataLoader(items, batch_size=BATCH, shuffle=False, num_workers=0)
    with torch.no_grad():
        for batch in loader:
            truth = occupancy_truth(target_frame, points_camera=batch.points_camera, points=batch.points,
                                    size=batch.extents.max(dim=1).values)
            for name, (levels, centres) in rows.items():
                with true_voxels(decoder, levels), (centre_points(decoder) if centres else contextlib.nullcontext()):
                    out = model(batch.image, **truth)
                chosen = resample(out.points_camera.float(), out.lengths, num_pred_points, resample_how)
                scores = cloud_metrics(chosen.points, batch.points_camera.float(), "shape", chosen.lengths)
                sums[name] += float(scores["f@1%"].double().sum())
                if name == "model":
                    _add_level_scores(level_sums, out.levels, batch_size=len(batch.image))
                    rotations.append(out.transform.rotation.double())
                    true_rotations.append(batch.rotation.double())
            count += len(batch.image)
    return {
        "f@1%": {name: value / count for name, value in sums.items()},
        "levels": [{"resolution": decoder.resolutions[level]} | {k: v / count for k, v in level_sums[level].items()}
                   for level in reversed(range(len(decoder.resolutions)))],
        "rotation_spread_deg": rotation_spread_deg(torch.cat(rotations)),
        "up_axis_error_deg": up_axis_errors_deg(torch.cat(rotations), torch.cat(true_rotations)),
        "n_samples": count,
    }


def family_indices(dataset) -> dict[str, list[int]]:
    """family -> the indices of a `PreparedDataset`'s images that show an object of that family (sorted by family)."""
    groups: dict[str, list[int]] = {}
    for index, (obj, _view) in enumerate(dataset.items):
        groups.setdefault(dataset.records[obj]["family"], []).append(index)
    return dict(sorted(groups.items()))


def family_breakdown(model, dataset, *, max_images: int | None = None, **options) -> dict[str, Any]:
    """`level_breakdown` once per object family of a `PreparedDataset`, each on at most `max_images` of that
    family's images (at even strides): {"families": {family: report}}. `options` as `level_breakdown`'s."""
    return {"families": {family: level_breakdown(model, torch.utils.data.Subset(dataset, indices),
                                                 max_images=max_images, **options)
                         for family, indices in family_indices(dataset).items()}}


def mean_rotation(rotations: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) -> (3, 3): the chordal L2 mean, the rotation nearest to the mean matrix (SVD projection)."""
    u, _, vh = torch.linalg.svd(rotations.mean(dim=0))
    flip = torch.ones(3, dtype=rotations.dtype, device=rotations.device)
    flip[2] = torch.sign(torch.det(u @ vh))  # a proper rotation (det +1)
    return u @ torch.diag(flip) @ vh


def rotation_spread_deg(rotations: torch.Tensor) -> float:
    """Median angle (degrees) between each of the (N, 3, 3) rotations and their mean rotation."""
    mean = mean_rotation(rotations).expand_as(rotations)
    return float(torch.rad2deg(geodesic_angle(mean, rotations)).median())


def line_angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) angle in degrees (0-90) between the lines along the (N, 3) unit vectors `a` and `b`."""
    return torch.rad2deg(torch.acos((a * b).sum(dim=-1).abs().clamp(max=1.0)))


def up_axis_errors_deg(predicted: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Median up-axis errors (module docstring) of (N, 3, 3) predicted camera-from-canonical rotations
    against the true ones: {"model": ..., "mean_true_axis": ...}."""
    true_axis = truth[:, :, 2]
    mean_axis = torch.nn.functional.normalize(true_axis.mean(dim=0), dim=0).expand_as(true_axis)
    return {"model": float(line_angle_deg(predicted[:, :, 2], true_axis).median()),
            "mean_true_axis": float(line_angle_deg(mean_axis, true_axis).median())}


def _add_level_scores(level_sums, levels, *, batch_size: int) -> None:
    """Add each sample's kept count, precision and recall per level."""
    for level, out in enumerate(levels):
        sample, keep, occupied = out.coords[:, 0].long(), out.kept, out.targets.bool()
        kept = torch.bincount(sample[keep], minlength=batch_size).double()
        hits = torch.bincount(sample[keep & occupied], minlength=batch_size).double()
        reachable = torch.bincount(sample[occupied], minlength=batch_size).double()
        level_sums[level]["kept"] += float(kept.sum())
        level_sums[level]["precision"] += float((hits / kept.clamp(min=1)).sum())
        level_sums[level]["recall"] += float((hits / reachable.clamp(min=1)).sum())


def markdown(report: dict[str, Any], *, command: str) -> str:
    lines = [f"`{command}` ({report['n_samples']} images; shape frame)", "", "| decoder voxels | f@1% |", "| --- | ---: |"]
    lines += [f"| {name} | {value:.4f} |" for name, value in report["f@1%"].items()]
    lines += ["", "| level | voxels kept | precision | recall of the reachable true voxels |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| R{row['resolution']} | {row['kept']:.0f} | {row['precision']:.3f} | {row['recall']:.3f} |"
              for row in report["levels"]]
    rotation = (f"Predicted rotation: median {report['rotation_spread_deg']:.1f} deg from its mean over these images "
                "(near 0: one rotation for every image, a viewer-centred frame).")
    up = report["up_axis_error_deg"]
    up_axis = (f"Up axis (canonical +z): median error {up['model']:.1f} deg; one constant axis, the truth's mean, "
               f"would score {up['mean_true_axis']:.1f} deg.")
    lines += ["", rotation, "", up_axis]
    return "\n".join(lines) + "\n"


def family_markdown(report: dict[str, Any], *, command: str) -> str:
    """One row per family: f@1% of every variant, the coarsest and finest levels' precision / recall, the up axis."""
    families = report["families"]
    first = next(iter(families.values()))
    names = list(first["f@1%"])
    coarse, fine = first["levels"][0]["resolution"], first["levels"][-1]["resolution"]
    header = ["family", "images", *(f"f@1% {name}" for name in names), f"R{coarse} precision / recall",
              f"R{fine} precision / recall", "up-axis error (constant) deg"]
    lines = [f"`{command}` (shape frame; per family)", "", "| " + " | ".join(header) + " |",
             "| --- | " + " | ".join("---:" for _ in header[1:]) + " |"]
    for family, row in families.items():
        levels, up = row["levels"], row["up_axis_error_deg"]
        cells = [family, str(row["n_samples"]), *(f"{row['f@1%'][name]:.4f}" for name in names),
                 f"{levels[0]['precision']:.3f} / {levels[0]['recall']:.3f}",
                 f"{levels[-1]['precision']:.3f} / {levels[-1]['recall']:.3f}",
                 f"{up['model']:.1f} ({up['mean_true_axis']:.1f})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
