"""Plain data <-> frozen dataclass, with type and range checks that name the offending key.

Schemas are frozen dataclasses whose fields carry their bounds in `param(...)` metadata. The
converter understands the annotations the schemas use: `bool`, `int`, `float`, `str`,
`Literal[...]`, `Optional[X]`, `Tuple[X, ...]` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from pointstn.errors import PointstnError


class ConfigError(PointstnError):
    """A config file, key or value that cannot be used."""


def param(default: Any, *, min: float | None = None, max: float | None = None, help: str = "") -> Any:
    """A schema field with an inclusive numeric range (applies to numbers and to tuple items)."""
    return dataclasses.field(default=default, metadata={"min": min, "max": max, "help": help})


def _origin_text(origins: Mapping[str, str], key: str) -> str:
    where = origins.get(key)
    return f" (set in {where})" if where else ""


def _check_range(value: float, meta: Mapping[str, Any], fail) -> None:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        fail(f"must be >= {lo}, got {value!r}")
    if hi is not None and value > hi:
        fail(f"must be <= {hi}, got {value!r}")


def _convert_value(tp: Any, value: Any, meta: Mapping[str, Any], key: str, origins: Mapping[str, str]) -> Any:
    def fail(problem: str):
        raise ConfigError(f"config key '{key}'{_origin_text(origins, key)}: {problem}")

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            fail(f"expected a mapping of {tp.__name__} fields, got {type(value).__name__}")
        return from_dict(tp, value, origins=origins, prefix=key + ".")
    if origin is Union or origin is types.UnionType:  # Optional[X] and X | None
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert_value(inner, value, meta, key, origins)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            fail(f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            fail(f"expected a list, got {type(value).__name__} {value!r}")
        if args[-1] is Ellipsis:
            item_types = (args[0],) * len(value)
        elif len(value) != len(args):
            fail(f"expected a list of {len(args)} items, got {len(value)}: {list(value)!r}")
        else:
            item_types = args
        return tuple(_convert_value(t, v, meta, f"{key}[{i}]", origins) for i, (t, v) in enumerate(zip(item_types, value, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            fail(f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"expected an integer, got {type(value).__name__} {value!r}")
        _check_range(value, meta, fail)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"expected a number, got {type(value).__name__} {value!r}")
        value = float(value)
        if not math.isfinite(value):
            fail(f"must be a finite number, got {value!r}")
        _check_range(value, meta, fail)
        return value
    if tp is str:
        if not isinstance(value, str):
            fail(f"expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"schema type {tp!r} of '{key}' is not supported by the config converter")


def from_dict(schema: type, data: Mapping[str, Any], *, origins: Mapping[str, str] | None = None, prefix: str = ""):
    """Build the frozen dataclass `schema` from `data`; unknown keys and bad values raise ConfigError.

    `origins` maps dotted keys to where they were set (a file path, "command line") for messages.
    """
    origins = origins or {}
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = prefix + str(unknown[0])
        raise ConfigError(
            f"unknown config key '{key}'{_origin_text(origins, key)}; "
            f"valid keys under '{prefix.rstrip('.') or '<top>'}': {', '.join(fields)}"
        )
    kwargs = {
        name: _convert_value(hints[name], data[name], fields[name].metadata, prefix + name, origins)
        for name in fields
        if name in data
    }
    try:
        return schema(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        where = prefix.rstrip(".") or "<top>"
        source = next((origin for key, origin in origins.items() if key.startswith(prefix)), None)
        set_in = f" (set in {source})" if source else ""
        raise ConfigError(f"config section '{where}'{set_in}: {exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """Plain, YAML-friendly data (tuples become lists) that `from_dict` turns back into `config`."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return plain(config)


def field_type(schema: type, dotted_key: str) -> Any:
    """The annotation of `a.b.c` in `schema`; ConfigError naming the valid keys when it is absent."""
    tp: Any = schema
    parts = dotted_key.split(".")
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"config key '{dotted_key}': '{'.'.join(parts[:depth])}' has no sub-keys")
        hints = typing.get_type_hints(tp)
        if part not in hints:
            where = ".".join(parts[:depth]) or "<top>"
            raise ConfigError(f"unknown config key '{dotted_key}'; valid keys under '{where}': {', '.join(hints)}")
        tp = hints[part]
    return tp
