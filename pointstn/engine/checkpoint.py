"""Checkpoints: atomic to write, safe to read, complete enough to rebuild the model alone.

A checkpoint is a `torch.save`d dict of tensors and plain values only: the model (and optionally
optimizer/scheduler) state, the step, RNG states, the pointstn version and the fully resolved
experiment config as YAML text. Loading uses `torch.load(weights_only=True)`, so a file carrying
pickled code is refused without running it; the loaded payload's structure is then checked (every
required entry present with its type, model weights a mapping of names to tensors) so a crafted or
damaged file ends in one `CheckpointError`; model weights load strictly, listing every mismatch.

Writing is atomic (`pointstn.io.atomic`): a kill at any instant leaves the previous file or the new
one under the final name. The temporary file of a write that was killed is removed by the next
successful save of the same checkpoint (one writer per checkpoint file: rank 0 of a run).
"""

from __future__ import annotations

import io
import pickle
import random
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pointstn import __version__
from pointstn.config import ExperimentConfig, config_from_yaml_text, dump_config
from pointstn.errors import PointstnError
from pointstn.io.atomic import atomic_write_bytes, stale_temporaries

FORMAT = "pointstn-checkpoint"
FORMAT_VERSION = 1


# What torch.load (its zip reader and weights-only unpickler) raises on damaged bytes: garbage opcodes
# pop empty stacks (IndexError), look up missing memo keys (KeyError), call with wrong types, ...
_DECODE_ERRORS = (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError, KeyError, TypeError,
                  AttributeError, struct.error, OverflowError, MemoryError)


class CheckpointError(PointstnError):
    """A checkpoint that cannot be used: missing, truncated, untrusted, or for another model."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint. `state` holds everything else that was saved (optimizer, RNG, ...)."""

    path: Path
    config: ExperimentConfig
    version: str
    step: int
    model_state: dict[str, torch.Tensor]
    state: dict[str, Any]


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as weights_only-loadable values (tensors and numbers)."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(cached)},
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy["pos"], numpy["has_gauss"], numpy["gauss"]))
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, config: ExperimentConfig, step: int,
                    **state: Any) -> None:
    """Write atomically: a kill at any instant leaves either the old file or the new one."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pointstn_version": __version__,
        "config_yaml": dump_config(config),
        "step": int(step),
        "model": model.state_dict(),
        **state,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    for leftover in stale_temporaries(path):  # half-written files of an earlier, killed save
        leftover.unlink(missing_ok=True)


# entry -> (accepted types, description) of what every checkpoint payload must hold
_REQUIRED = {
    "pointstn_version": ((str,), "a version string"),
    "config_yaml": ((str,), "the config as YAML text"),
    "step": ((int,), "a non-negative integer"),
    "model": ((dict,), "a mapping of parameter names to tensors"),
}


def _check_payload(payload: dict, path: Path) -> None:
    """One CheckpointError naming the first entry that is missing or of the wrong type."""
    for key, (types, what) in _REQUIRED.items():
        value = payload.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            got = "nothing" if key not in payload else f"type {type(value).__name__}"
            raise CheckpointError(f"{path}: damaged checkpoint: '{key}' should be {what}, found {got}")
    if payload["step"] < 0:
        raise CheckpointError(f"{path}: damaged checkpoint: 'step' is negative ({payload['step']})")
    bad = next((k for k, v in payload["model"].items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))),
               None)
    if bad is not None:
        raise CheckpointError(f"{path}: damaged checkpoint: model entry {bad!r} is not a named tensor")


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint safely; every problem is a one-line CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported content"
        raise CheckpointError(f"{path}: refused to load (not a plain-weights checkpoint: {first})") from None
    except _DECODE_ERRORS as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pointstn checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {payload.get('format_version')!r} is not supported "
                              f"(this pointstn {__version__} reads format {FORMAT_VERSION})")
    _check_payload(payload, path)
    config = config_from_yaml_text(payload["config_yaml"], ExperimentConfig, source=f"{path} (stored config)")
    state = {k: v for k, v in payload.items()
             if k not in ("format", "format_version", "pointstn_version", "config_yaml", "step", "model")}
    return Checkpoint(path=path, config=config, version=str(payload["pointstn_version"]), step=int(payload["step"]),
                      model_state=payload["model"], state=state)


def load_model_state(model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """Strict load: every missing, unexpected or mis-shaped key is listed in one error. Modules whose
    buffers are sized by data (`adopt_shapes`: the retrieval prior's memory) take the checkpoint's sizes."""
    theirs = checkpoint.model_state
    for name, module in model.named_modules():
        if hasattr(module, "adopt_shapes"):
            prefix = f"{name}." if name else ""
            module.adopt_shapes({k[len(prefix):]: v for k, v in theirs.items() if k.startswith(prefix)})
    own = model.state_dict()
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    shapes = sorted(k for k in set(own) & set(theirs) if tuple(own[k].shape) != tuple(theirs[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                parts.append(f"{label}: {', '.join(keys)}")
        raise CheckpointError(f"{checkpoint.path} does not match this model ({'; '.join(parts)})")
    model.load_state_dict(theirs, strict=True)


def model_from_checkpoint(path: str | Path, *, device: str | torch.device = "cpu"):
    """(model in eval mode, checkpoint): the model is rebuilt from the config stored in the file."""
    from pointstn.models.build import build_model

    checkpoint = load_checkpoint(path, map_location=device)
    model = build_model(checkpoint.config)
    load_model_state(model, checkpoint)
    return model.to(device).eval(), checkpoint
