"""The on-disk dataset format (docs/DATASET.md): one compressed NPZ per object plus a JSON manifest.

```
data/<name>/
  manifest.json          format version, generator config, seed, rig, splits by object, per-object
                         records with content hashes; "complete": false while generation runs
  objects/<id>.npz       everything about one object and all its views (arrays listed in OBJECT_ARRAYS)
  preview.png            optional contact sheet (`prepare-data --preview`)
```
Object files are written atomically (temporary file + rename), so a file under its final name is
always complete; a kill leaves at most a hidden `.<id>.npz.<random>.tmp` that resume removes.

Reading is defensive (a dataset folder may come from elsewhere): `read_manifest` checks the whole
manifest's structure and types (the generator config, every record, the splits) and that every object
file is `objects/<id>.npz` with a plain id, so no path in it can leave the dataset folder;
`read_object` checks the archive before numpy reads it (`pointstn.io.archive`: no pickles, array
headers that fit their data, at most MAX_OBJECT_BYTES uncompressed, which the writer enforces too).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import posixpath
import re
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pointstn.errors import PointstnError
from pointstn.io.archive import check_npz_members
from pointstn.io.atomic import atomic_write_bytes, atomic_write_text

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
OBJECTS_DIR = "objects"
PREVIEW_NAME = "preview.png"
# Largest uncompressed content of one object file (all arrays): refused when writing, and checked from
# the zip directory before reading, so a hostile file cannot make a reader allocate more.
MAX_OBJECT_BYTES = 2 << 30
_OBJECT_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")  # generated and sanitized mesh names
_SHA256 = re.compile(r"[0-9a-f]{64}")

# name -> (dtype, shape with V = views, H/W = image size, N = surface points, None = any length)
OBJECT_ARRAYS: dict[str, tuple[str, tuple]] = {
    "mesh_vertices": ("float64", (None, 3)),  # canonical frame, metres
    "mesh_faces": ("int32", (None, 3)),
    "surface_points": ("float32", ("N", 3)),  # canonical frame, metres
    "surface_normals": ("float32", ("N", 3)),  # unit outward normals
    "images": ("uint8", ("V", "H", "W", 3)),  # RGB
    "masks": ("bool", ("V", "H", "W")),  # object pixels
    "depths": ("float32", ("V", "H", "W")),  # camera-frame z in metres, 0 = background
    "rotations": ("float64", ("V", 3, 3)),  # camera-from-object, OpenCV camera frame
    "translations": ("float64", ("V", 3)),  # x_cam = R x_obj + t, metres
    "intrinsics": ("float64", (3, 3)),  # K in pixels
    "view_angles": ("float64", ("V", 4)),  # azimuth, elevation, roll (degrees), distance (m)
    "view_bins": ("str", ("V",)),  # viewpoint bin per view (pointstn.data.render.rig.VIEWPOINT_BINS)
}
OPTIONAL_ARRAYS = ("depths",)


@dataclass(frozen=True)
class ObjectRecord:
    """The manifest's entry for one object (also stored inside its NPZ as `meta`, without the hash)."""

    object_id: str
    split: str
    family: str
    symmetry: str
    source: str  # "procedural:<family>:<seed>" or the mesh file it came from
    params: Mapping[str, Any]
    num_views: int
    view_bins: tuple[str, ...]
    extents: tuple[float, float, float]  # bounding-box edges, metres
    volume_target: float | None  # m^3; None when unknown (e.g. a mesh that is not watertight)
    volume_material: float | None
    volume_capacity: float | None  # open containers only
    volume_note: str
    file: str = ""  # relative to the dataset root
    sha256: str = ""
    bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["params"] = dict(self.params)
        data["view_bins"] = list(self.view_bins)
        data["extents"] = list(self.extents)
        return data

    @staticmethod
    def from_json(data: Mapping[str, Any], where: str) -> ObjectRecord:
        try:
            record = ObjectRecord(**{**data, "view_bins": tuple(data["view_bins"]), "extents": tuple(data["extents"])})
        except (TypeError, KeyError) as exc:
            raise PointstnError(f"{where}: malformed object record ({exc})") from None
        return record


def object_file(object_id: str) -> str:
    """Path of an object's NPZ relative to the dataset root."""
    return f"{OBJECTS_DIR}/{object_id}.npz"


def encode_object(arrays: Mapping[str, np.ndarray], record: ObjectRecord) -> bytes:
    """The NPZ bytes of one object (compressed); `record` goes in as JSON text (no pickles)."""
    missing = [k for k in OBJECT_ARRAYS if k not in arrays and k not in OPTIONAL_ARRAYS]
    if missing:
        raise ValueError(f"object {record.object_id}: missing arrays {missing}")
    meta = {k: v for k, v in record.to_json().items() if k not in ("sha256", "bytes")}
    members = {"meta": np.array(json.dumps(meta, sort_keys=True)), **arrays}
    total = sum(np.asanyarray(a).nbytes for a in members.values())
    if total > MAX_OBJECT_BYTES:
        raise PointstnError(f"object {record.object_id}: its arrays hold {total} bytes, more than the "
                            f"{MAX_OBJECT_BYTES} bytes an object file may hold (MAX_OBJECT_BYTES); use fewer "
                            "views, smaller images or fewer surface points")
    buffer = io.BytesIO()
    # an NPZ is a zip of .npy files; fast deflate (level 1) and a fixed timestamp keep it quick and
    # byte-reproducible
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in members.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_object(root: Path, arrays: Mapping[str, np.ndarray], record: ObjectRecord) -> ObjectRecord:
    """Write one object atomically; returns its record with file, hash and size filled in."""
    data = encode_object(arrays, record)
    relative = object_file(record.object_id)
    atomic_write_bytes(root / relative, data)
    return ObjectRecord(
        **{**record.__dict__, "file": relative, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    )


def resolve_inside(root: Path, relative: str) -> Path:
    """`root / relative`, refusing paths that escape the dataset root (`..`, absolute, symlinks)."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise PointstnError(f"dataset {root}: path '{relative}' escapes the dataset folder")
    return path


def _check_array(name: str, array: np.ndarray, dims: dict[str, int], where: str) -> None:
    dtype, shape = OBJECT_ARRAYS[name]
    ok_dtype = array.dtype.kind == "U" if dtype == "str" else array.dtype == np.dtype(dtype)
    if not ok_dtype:
        raise PointstnError(f"{where}: array '{name}' has dtype {array.dtype}, expected {dtype}")
    if array.ndim != len(shape):
        raise PointstnError(f"{where}: array '{name}' has shape {array.shape}, expected {len(shape)} dimensions")
    for axis, (want, got) in enumerate(zip(shape, array.shape, strict=True)):
        if isinstance(want, str):
            if dims.setdefault(want, got) != got:
                raise PointstnError(f"{where}: array '{name}' axis {axis} is {got}, other arrays say {want}={dims[want]}")
        elif want is not None and want != got:
            raise PointstnError(f"{where}: array '{name}' has shape {array.shape}, axis {axis} should be {want}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise PointstnError(f"{where}: array '{name}' holds NaN or inf values")


def read_object(path: Path, *, arrays: tuple[str, ...] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Load (and validate) an object's arrays and its meta record; `arrays` limits what is read."""
    where = str(path)
    check_npz_members(path, shown=where, max_total_bytes=MAX_OBJECT_BYTES, limit_name="MAX_OBJECT_BYTES")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            wanted = tuple(OBJECT_ARRAYS) if arrays is None else arrays
            missing = [k for k in (*wanted, "meta") if k not in names and k not in OPTIONAL_ARRAYS]
            if missing:
                raise PointstnError(f"{where}: missing arrays {missing}")
            loaded = {k: npz[k] for k in wanted if k in names}
            meta = json.loads(str(npz["meta"]))
    except PointstnError:
        raise
    except FileNotFoundError:
        raise PointstnError(f"object file not found: {where}") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, json.JSONDecodeError) as exc:
        raise PointstnError(f"{where}: corrupt object file ({' '.join(str(exc).split())})") from None
    dims: dict[str, int] = {}
    for name, array in loaded.items():
        _check_array(name, array, dims, where)
    return loaded, meta


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(root: Path, manifest: Mapping[str, Any]) -> None:
    atomic_write_text(root / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=False) + "\n")


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the dataset at `root`, checked for format version and required keys."""
    path = Path(root) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PointstnError(f"no dataset at {root}: {MANIFEST_NAME} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PointstnError(f"{path}: cannot be read as JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "pointstn-dataset":
        raise PointstnError(f"{path} is not a pointstn dataset manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise PointstnError(f"{path}: dataset format version {version!r} is not supported (expected {FORMAT_VERSION})")
    for key in ("config", "splits", "objects", "complete"):
        if key not in manifest:
            raise PointstnError(f"{path}: manifest has no '{key}'")
    _check_manifest(manifest, path)
    return manifest


def _check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Types and consistency of everything readers use; one PointstnError naming the first problem."""
    from pointstn.config import from_dict, to_dict
    from pointstn.data.config import SPLITS, DatasetConfig

    def fail(problem: str):
        raise PointstnError(f"{path}: damaged manifest: {problem}")

    if not isinstance(manifest["complete"], bool):
        fail("'complete' must be true or false")
    if not isinstance(manifest["config"], dict):
        fail("'config' must be a mapping")
    config = from_dict(DatasetConfig, manifest["config"], origins={k: f"{path} (config)" for k in manifest["config"]})
    manifest["config"] = to_dict(config)  # readers see every key, validated (defaults filled in)
    if manifest.get("rig") != json.loads(json.dumps(config.rig.to_dict())):
        fail("'rig' does not match the rig of its own 'config'")
    objects, splits = manifest["objects"], manifest["splits"]
    if not isinstance(objects, dict):
        fail("'objects' must be a mapping of object ids to records")
    for object_id, entry in objects.items():
        _check_record(object_id, entry, config.views_per_object, fail)
    if not isinstance(splits, dict) or set(splits) - set(SPLITS):
        fail(f"'splits' must map split names ({', '.join(SPLITS)}) to lists of object ids")
    seen: set[str] = set()
    for name, ids in splits.items():
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            fail(f"split '{name}' must be a list of object ids")
        for object_id in ids:
            if object_id not in objects or objects[object_id]["split"] != name or object_id in seen:
                fail(f"split '{name}' lists '{object_id}', which is not an object of that split (or is listed twice)")
            seen.add(object_id)
    if seen != set(objects):
        fail(f"objects {sorted(set(objects) - seen)[:3]} are in no split")


def _check_record(object_id: Any, entry: Any, views: int, fail) -> None:
    if not isinstance(object_id, str) or not _OBJECT_ID.fullmatch(object_id):
        fail(f"object id {str(object_id)[:60]!r} is not a plain name (letters, digits, '.', '_', '-')")
    if not isinstance(entry, dict):
        fail(f"object '{object_id}': record must be a mapping")
    strings = ("object_id", "split", "family", "symmetry", "source", "volume_note", "file", "sha256")
    for key in strings:
        if not isinstance(entry.get(key), str):
            fail(f"object '{object_id}': '{key}' must be a string")
    if entry["object_id"] != object_id:
        fail(f"object '{object_id}': its record names '{entry['object_id']}'")
    if entry["file"] != object_file(object_id):
        escapes = posixpath.isabs(entry["file"]) or posixpath.normpath(entry["file"]).split("/")[0] == ".."
        fail(f"object '{object_id}': file '{entry['file'][:200]}' "
             f"{'escapes the dataset folder' if escapes else 'is not ' + object_file(object_id)}")
    if not _SHA256.fullmatch(entry["sha256"]):
        fail(f"object '{object_id}': 'sha256' is not 64 lowercase hex digits")
    for key in ("num_views", "bytes"):
        if not isinstance(entry.get(key), int) or isinstance(entry[key], bool) or entry[key] < 0:
            fail(f"object '{object_id}': '{key}' must be a non-negative integer")
    if entry["num_views"] != views:
        fail(f"object '{object_id}': num_views is {entry['num_views']}, the config renders {views} per object")
    bins = entry.get("view_bins")
    if not isinstance(bins, list) or len(bins) != views or not all(isinstance(b, str) for b in bins):
        fail(f"object '{object_id}': 'view_bins' must list one bin name per view")
    if not isinstance(entry.get("params"), dict):
        fail(f"object '{object_id}': 'params' must be a mapping")
    extents = entry.get("extents")
    if not (isinstance(extents, list) and len(extents) == 3 and all(_finite_number(e) and e >= 0 for e in extents)):
        fail(f"object '{object_id}': 'extents' must be three finite non-negative numbers")
    for key in ("volume_target", "volume_material", "volume_capacity"):
        if entry.get(key) is not None and not _finite_number(entry[key]):
            fail(f"object '{object_id}': '{key}' must be a finite number or null")
    unknown = set(entry) - set(ObjectRecord.__dataclass_fields__)
    if unknown:
        fail(f"object '{object_id}': unknown record keys {sorted(unknown)[:5]}")


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def verify_dataset(root: Path) -> list[str]:
    """Recompute every object's hash; returns one line per problem (empty list = intact)."""
    root = Path(root)
    manifest = read_manifest(root)
    problems = [] if manifest["complete"] else ["dataset generation did not finish (run prepare-data --resume)"]
    for object_id, entry in manifest["objects"].items():
        path = resolve_inside(root, entry["file"])
        if not path.is_file():
            problems.append(f"{object_id}: file {entry['file']} is missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{object_id}: file {entry['file']} does not match its recorded sha256 (corrupted or modified)")
    return problems
