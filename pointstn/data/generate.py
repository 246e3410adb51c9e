"""Dataset generation: plan objects and splits, build each object (geometry, surface samples, views),
write it atomically, resume after a kill, and finish with a manifest holding every content hash.

Faults: a failure of one object (a bad mesh, a render error) is recorded and the run goes on; a
failure of the storage (`pointstn.io.atomic.StorageError`: disk full, quota, I/O error) stops the run at
once with one line, because every later object would fail the same way. The manifest then still says
"complete": false, every object file already written is intact, and `--resume` finishes the run.

Determinism: object k of family f gets the seed SeedSequence([dataset seed, crc32(f), k]); its shape,
surface samples, viewpoints and appearances derive from that seed alone, so an object is the same
whatever the worker count, the order of completion or an interruption in between.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import zlib
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pointstn import __version__
from pointstn.config import dump_config, to_dict
from pointstn.data.config import SPLITS, DatasetConfig
from pointstn.data.format import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    MAX_OBJECT_BYTES,
    OBJECTS_DIR,
    ObjectRecord,
    object_file,
    read_manifest,
    read_object,
    sha256_file,
    write_manifest,
    write_object,
)
from pointstn.data.geometry_source import ObjectGeometry, load_geometry, plan_sources
from pointstn.errors import PointstnError
from pointstn.io.atomic import StorageError, stale_temporaries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectTask:
    """One object to build: its id, split and where its geometry comes from."""

    object_id: str
    split: str
    family: str
    seed: int
    source: Any  # procedural family name or an ingestion MeshSource


@dataclass(frozen=True)
class GenerationSummary:
    root: Path
    objects: int  # objects in the dataset
    views: int  # views in the dataset
    built_views: int  # views rendered by this run (the rest were kept from an interrupted run)
    reused: int  # objects kept from an interrupted run
    failures: tuple[tuple[str, str], ...]  # (object or file, reason)
    seconds: float

    @property
    def views_per_second(self) -> float:
        return self.built_views / self.seconds if self.seconds > 0 else 0.0


def object_seed(dataset_seed: int, family: str, index: int) -> int:
    entropy = [dataset_seed, zlib.crc32(family.encode("utf-8")), index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def assign_splits(count: int, config: DatasetConfig, rng: np.random.Generator) -> list[str]:
    """Split labels for `count` objects of one group: shuffled, proportional, and every split with a
    non-zero fraction gets at least one object once the group has one object per such split."""
    fractions = {name: getattr(config.splits, name) for name in SPLITS}
    wanted = [name for name in SPLITS if fractions[name] > 0]
    sizes = {name: int(np.floor(fractions[name] * count)) for name in SPLITS}
    if count >= len(wanted):
        for name in wanted:
            sizes[name] = max(sizes[name], 1)
    while sum(sizes.values()) > count:  # the minimums may overshoot: take from the largest split
        largest = max(sizes, key=sizes.get)
        sizes[largest] -= 1
    sizes["train" if fractions["train"] > 0 else wanted[0]] += count - sum(sizes.values())
    labels = [name for name in SPLITS for _ in range(sizes[name])]
    return [labels[i] for i in rng.permutation(count)]


def plan_tasks(config: DatasetConfig) -> tuple[list[ObjectTask], list[tuple[str, str]]]:
    """Every object of the dataset with its split (stratified by family), plus discovery failures."""
    groups, failures = plan_sources(config)
    tasks: list[ObjectTask] = []
    for family, sources in groups.items():
        rng = np.random.default_rng([config.seed, zlib.crc32(family.encode("utf-8")), 7])
        splits = assign_splits(len(sources), config, rng)
        for index, (object_id, source) in enumerate(sources):
            tasks.append(ObjectTask(object_id, splits[index], family, object_seed(config.seed, family, index), source))
    return tasks, failures


def build_object(task: ObjectTask, config: DatasetConfig, renderer) -> tuple[dict[str, np.ndarray], ObjectRecord]:
    """Geometry, 16384-ish surface samples with normals, and every view of one object."""
    geometry: ObjectGeometry = load_geometry(task, config)
    radius = 0.5 * float(np.linalg.norm(geometry.extents))
    if radius > config.rig.max_object_radius_m:
        raise PointstnError(
            f"{task.object_id}: bounding-sphere radius {radius:.3f} m exceeds the rig's max_object_radius_m "
            f"{config.rig.max_object_radius_m} m (check --units, or use a rig with a larger field of view)"
        )
    rng = np.random.default_rng([task.seed, 1])
    points, normals = geometry.sample_surface(config.num_surface_points, seed=task.seed)
    rig, size = config.rig, config.rig.image_size
    intrinsics = rig.intrinsics()
    views = [rig.sample_view(rng) for _ in range(config.views_per_object)]
    images, masks, depths = [], [], []
    for view in views:
        appearance = config.appearance.sample(rng, height=size, width=size)
        result = renderer.render(
            vertices=geometry.vertices,
            faces=geometry.faces,
            camera_from_object=view.matrix(),
            intrinsics=intrinsics,
            appearance=appearance,
        )
        images.append(result.rgb)
        masks.append(result.mask)
        depths.append(result.depth)
    arrays = {
        "mesh_vertices": geometry.vertices.astype(np.float64),
        "mesh_faces": geometry.faces.astype(np.int32),
        "surface_points": points.astype(np.float32),
        "surface_normals": normals.astype(np.float32),
        "images": np.stack(images),
        "masks": np.stack(masks),
        "rotations": np.stack([v.rotation for v in views]),
        "translations": np.stack([v.translation for v in views]),
        "intrinsics": intrinsics,
        "view_angles": np.array([[v.azimuth_deg, v.elevation_deg, v.roll_deg, v.distance_m] for v in views]),
        "view_bins": np.array([rig.viewpoint_bin(v) for v in views]),
    }
    if config.store_depth:
        arrays["depths"] = np.stack(depths)
    record = ObjectRecord(
        object_id=task.object_id,
        split=task.split,
        family=task.family,
        symmetry=geometry.symmetry,
        source=geometry.source,
        params=geometry.params,
        num_views=len(views),
        view_bins=tuple(str(b) for b in arrays["view_bins"]),
        extents=tuple(float(e) for e in geometry.extents),
        volume_target=geometry.volume_target,
        volume_material=geometry.volume_material,
        volume_capacity=geometry.volume_capacity,
        volume_note=geometry.volume_note,
    )
    return arrays, record


# ---- worker processes: one renderer (one OpenGL context) per process, created once -------------
_WORKER: dict[str, Any] = {}


def _init_worker(config: DatasetConfig, root: str, backend: str) -> None:
    from pointstn.data.render.backend import Renderer

    size = config.rig.image_size
    _WORKER.update(config=config, root=Path(root), renderer=Renderer(width=size, height=size, backend=backend))


def _run_task(task: ObjectTask) -> tuple[str, ObjectRecord | None, str]:
    """Build and write one object; a failure is returned (not raised) so the run goes on."""
    try:
        arrays, record = build_object(task, _WORKER["config"], _WORKER["renderer"])
        return task.object_id, write_object(_WORKER["root"], arrays, record), ""
    except StorageError:
        raise  # not this object's fault: the run must stop (module docstring)
    except PointstnError as exc:
        return task.object_id, None, " ".join(str(exc).split())


def _prepare_root(root: Path, config: DatasetConfig, resume: bool) -> dict[str, ObjectRecord]:
    """Check the output folder; on resume return the finished objects worth keeping."""
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.exists():
        if root.exists() and any(root.iterdir()):
            raise PointstnError(f"output folder {root} is not empty and holds no pointstn dataset; choose another folder")
        (root / OBJECTS_DIR).mkdir(parents=True, exist_ok=True)
        return {}
    manifest = read_manifest(root)
    if manifest["config"] != to_dict(config):
        differing = sorted(k for k in to_dict(config) if manifest["config"].get(k) != to_dict(config)[k])
        raise PointstnError(
            f"output folder {root} holds a different dataset (config differs in: {', '.join(differing)}); "
            "choose another folder"
        )
    if not resume:
        state = "a finished" if manifest["complete"] else "an unfinished"
        hint = "" if manifest["complete"] else "; continue it with --resume"
        raise PointstnError(f"output folder {root} already holds {state} dataset '{config.name}'{hint}")
    for stale in [*(root / OBJECTS_DIR).glob(".*.tmp"), *stale_temporaries(root / MANIFEST_NAME)]:
        stale.unlink()  # half-written files of a killed run
    kept: dict[str, ObjectRecord] = {}
    for path in sorted((root / OBJECTS_DIR).glob("*.npz")):
        try:
            _, meta = read_object(path)
        except PointstnError as exc:
            log.warning("redoing %s: %s", path.name, exc)
            path.unlink()
            continue
        record = ObjectRecord.from_json(meta, str(path))
        kept[record.object_id] = ObjectRecord(
            **{**record.__dict__, "file": object_file(record.object_id), "sha256": sha256_file(path),
               "bytes": path.stat().st_size}
        )
    return kept


def _manifest(config: DatasetConfig, tasks: list[ObjectTask], records: dict[str, ObjectRecord],
              failures: list[tuple[str, str]], complete: bool) -> dict[str, Any]:
    ok = [t for t in tasks if t.object_id in records]
    return {
        "format": "pointstn-dataset",
        "format_version": FORMAT_VERSION,
        "pointstn_version": __version__,
        "name": config.name,
        "complete": complete,
        "config": to_dict(config),
        "config_yaml": dump_config(config),
        "rig": config.rig.to_dict(),
        "seed": config.seed,
        "splits": {name: [t.object_id for t in ok if t.split == name] for name in SPLITS},
        "counts": {"objects": len(ok), "views": sum(records[t.object_id].num_views for t in ok)},
        "objects": {t.object_id: records[t.object_id].to_json() for t in ok},
        "failures": [{"object": name, "reason": reason} for name, reason in failures],
    }


def generate_dataset(
    config: DatasetConfig, root: str | Path, *, workers: int = 2, resume: bool = False, backend: str = "auto",
    progress: bool = True,
) -> GenerationSummary:
    """Make (or finish, with `resume`) the dataset described by `config` in `root`."""
    from tqdm import tqdm

    start = time.perf_counter()
    root = Path(root)
    tasks, failures = plan_tasks(config)
    if not tasks:
        raise PointstnError("the dataset config selects no objects")
    check_object_budget(config)
    records = _prepare_root(root, config, resume)
    records = {k: v for k, v in records.items() if k in {t.object_id for t in tasks}}
    reused = len(records)
    write_manifest(root, _manifest(config, tasks, records, failures, complete=False))
    todo = [t for t in tasks if t.object_id not in records]
    bar = tqdm(total=len(tasks), initial=reused, unit="obj", desc=f"prepare {config.name}", disable=not progress)
    try:
        for object_id, record, error in _execute(todo, config, root, workers, backend):
            if record is None:
                failures.append((object_id, error))
            else:
                records[object_id] = record
            bar.update(1)
    except StorageError as exc:
        raise StorageError(f"{exc}; stopped with {len(records)} of {len(tasks)} objects saved in {root} "
                           "(free space, then finish with prepare-data --resume)") from None
    finally:
        bar.close()
    write_manifest(root, _manifest(config, tasks, records, failures, complete=True))
    built = [r for k, r in records.items() if k in {t.object_id for t in todo}]
    return GenerationSummary(
        root=root,
        objects=len(records),
        views=sum(r.num_views for r in records.values()),
        built_views=sum(r.num_views for r in built),
        reused=reused,
        failures=tuple(failures),
        seconds=time.perf_counter() - start,
    )


def _execute(todo: list[ObjectTask], config: DatasetConfig, root: Path, workers: int, backend: str):
    if not todo:
        return
    if workers <= 1:
        _init_worker(config, str(root), backend)
        try:
            yield from map(_run_task, todo)
        finally:
            _WORKER.pop("renderer").close()
        return
    context = multiprocessing.get_context("spawn")
    pool = futures.ProcessPoolExecutor(
        max_workers=min(workers, len(todo)), mp_context=context, initializer=_init_worker,
        initargs=(config, str(root), backend),
    )
    try:
        yield from (f.result() for f in futures.as_completed([pool.submit(_run_task, t) for t in todo]))
    finally:  # after a storage error (or an interrupt) do not start the objects still queued
        pool.shutdown(wait=True, cancel_futures=True)


def check_object_budget(config: DatasetConfig) -> None:
    """Refuse, before any work, a config whose object files would exceed MAX_OBJECT_BYTES (views alone)."""
    size = config.rig.image_size
    per_view = size * size * (3 + 1 + (4 if config.store_depth else 0))  # RGB, mask, float32 depth
    needed = config.views_per_object * per_view + config.num_surface_points * 2 * 3 * 4
    if needed > MAX_OBJECT_BYTES:
        raise PointstnError(
            f"views_per_object={config.views_per_object} at {size}x{size} px and {config.num_surface_points} "
            f"surface points need {needed} bytes per object file, more than MAX_OBJECT_BYTES={MAX_OBJECT_BYTES}"
        )


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))
