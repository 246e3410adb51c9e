"""`pointstn prepare-data`: make a dataset from procedural families (`--config`) or your meshes (`--meshes`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pointstn.errors import PointstnError

HELP = "make a dataset: procedural objects (--config) or your own meshes (--meshes)"
log = logging.getLogger("pointstn.prepare_data")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="dataset config (e.g. configs/data/graspable_demo.yaml)")
    source.add_argument("--meshes", help="folder, glob, mesh file or URDF of your objects (.obj .stl .ply .glb .off)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dataset config overrides, e.g. views_per_object=4")
    parser.add_argument("--out", help="output folder (default data/<name>)")
    parser.add_argument("--views", type=int, help="views per object (with --meshes; default 8)")
    parser.add_argument("--units", choices=("m", "cm", "mm"), help="units of the mesh files (with --meshes; required)")
    parser.add_argument("--up", choices=("z", "y"), default="z", help="up axis of the mesh files (with --meshes)")
    parser.add_argument("--family", help="family label for every mesh (with --meshes; default 'user')")
    parser.add_argument("--workers", type=int, default=2, help="parallel worker processes (default 2)")
    parser.add_argument("--resume", action="store_true", help="finish an interrupted run in --out")
    parser.add_argument("--backend", choices=("auto", "osmesa", "egl"), default="auto", help="offscreen OpenGL backend")
    parser.add_argument("--preview", action="store_true", help="also write a contact sheet <out>/preview.png")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load_config(args: argparse.Namespace):
    from pointstn.config import from_dict, load_config
    from pointstn.config.load import apply_overrides
    from pointstn.data.config import DatasetConfig

    if args.config:
        for flag in ("views", "units", "family"):
            if getattr(args, flag) is not None:
                raise PointstnError(f"--{flag} is for --meshes; set it in the config or as an override with --config")
        return load_config(args.config, DatasetConfig, args.overrides)
    if args.units is None:
        raise PointstnError("--meshes needs --units m|cm|mm (the unit the mesh files are written in)")
    if not args.out:
        raise PointstnError("--meshes needs --out DIR (e.g. data/my_objects)")
    data = {
        "name": Path(args.out).name,
        "source": "meshes",
        "meshes": {"spec": args.meshes, "units": args.units, "up": args.up, "family": args.family},
        "views_per_object": 8 if args.views is None else args.views,
    }
    data = apply_overrides(DatasetConfig, data, args.overrides, {})
    return from_dict(DatasetConfig, data)


def run(args: argparse.Namespace) -> int:
    from pointstn.data.generate import generate_dataset

    if args.workers < 1:
        raise PointstnError(f"--workers must be >= 1, got {args.workers}")
    config = _load_config(args)
    out = Path(args.out) if args.out else Path("data") / config.name
    summary = generate_dataset(
        config, out, workers=args.workers, resume=args.resume, backend=args.backend, progress=not args.no_progress
    )
    print(f"dataset {config.name} in {summary.root}: {summary.objects} objects, {summary.views} views "
          f"({summary.reused} objects kept from an earlier run)")
    print(f"rendered {summary.built_views} views in {summary.seconds:.1f} s ({summary.views_per_second:.1f} views/s)")
    for name, reason in summary.failures:
        print(f"failed: {name}: {reason}")
    if args.preview:
        from pointstn.data.preview import write_preview

        print(f"preview: {write_preview(out)}")
    # the dataset holds every object that worked; failures still make the exit code say so
    return 1 if summary.failures else 0
