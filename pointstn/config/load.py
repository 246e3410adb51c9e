"""YAML config files: one optional `_base_`, `a.b=value` overrides, dump and reload.

Rules (STYLE.md): `yaml.safe_load` semantics only (no Python tags), duplicate keys are errors,
a document may expand to at most MAX_YAML_NODES nodes (aliases counted each time they are used: an
"exponential entity" / billion-laughs file is refused before it is built) nested at most
MAX_YAML_DEPTH deep, recursive aliases are refused,
`_base_` is a single path resolved relative to the file that names it (chains allowed, cycles
are errors), mappings merge key by key and every other value replaces the base's value. Relative
paths *inside* configs (e.g. `data.root`) are relative to the current directory, as on a command line.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pointstn.config.convert import ConfigError, field_type, from_dict, to_dict

T = TypeVar("T")
BASE_KEY = "_base_"
MAX_YAML_NODES = 100_000  # scalars + lists + mappings of one document, aliases expanded
MAX_YAML_DEPTH = 64  # nesting of lists and mappings (a real config nests 3-4 deep)


class _StrictSafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _StrictSafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None, None, f"config keys must be strings, got {key!r}", key_node.start_mark
            )
        if key in mapping:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_StrictSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.1 (PyYAML) reads an exponent without a decimal point, `lr: 1e-4`, as the string "1e-4"; YAML 1.2
# and every user read it as a number. This resolver (tried after PyYAML's own) makes it a float.
_StrictSafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _check_node_graph(root: yaml.Node, source: str) -> None:
    """Refuse documents that would expand past MAX_YAML_NODES or MAX_YAML_DEPTH, or contain themselves.

    Walks the composed node graph the way construction and every later pass over the data would (an
    alias is visited again each time it is used), iteratively, stopping at the first limit.
    """
    visited, on_path = 0, set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, leaving = stack.pop()
        if leaving:
            on_path.discard(id(node))
            continue
        visited += 1
        if visited > MAX_YAML_NODES:
            raise ConfigError(f"{source}: refused: the YAML expands to more than {MAX_YAML_NODES} values "
                              "(anchors and aliases multiply it; MAX_YAML_NODES in pointstn/config/load.py)")
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{source}: refused: YAML nested deeper than {MAX_YAML_DEPTH} levels "
                              "(MAX_YAML_DEPTH in pointstn/config/load.py)")
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            if id(node) in on_path:
                raise ConfigError(f"{source}: line {node.start_mark.line + 1}: refused: an alias refers to a "
                                  "value that contains it (recursive YAML)")
            on_path.add(id(node))
            stack.append((node, depth, True))
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
            stack.extend((child, depth + 1, False) for child in reversed(children))


def _parse_yaml(text: str, source: str) -> Any:
    loader = None
    try:
        loader = _StrictSafeLoader(text)  # the reader already refuses control characters here
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node_graph(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line
        raise ConfigError(f"{source}:{where} cannot be parsed as safe YAML: {problem}".replace(":  ", ": ")) from None
    except RecursionError:
        raise ConfigError(f"{source}: refused: YAML nested too deeply to parse") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits, an impossible date
        raise ConfigError(f"{source}: cannot be parsed as safe YAML: {' '.join(str(exc).split())[:200]}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _read_file(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    data = _parse_yaml(text, str(path))
    if data is None:
        raise ConfigError(f"config file {path} is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def _merge(base: dict, child: dict, origins: dict[str, str], source: str, prefix: str = "") -> dict:
    merged = dict(base)
    for key, value in child.items():
        dotted = prefix + key
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value, origins, source, dotted + ".")
        else:
            merged[key] = value
            _record_origins(value, origins, source, dotted)
    return merged


def _record_origins(value: Any, origins: dict[str, str], source: str, dotted: str) -> None:
    for key in [k for k in origins if k == dotted or k.startswith((dotted + ".", dotted + "["))]:
        del origins[key]
    origins[dotted] = source
    if isinstance(value, dict):
        for key, sub in value.items():
            _record_origins(sub, origins, source, f"{dotted}.{key}")


def load_raw(path: str | Path, origins: dict[str, str] | None = None, _chain: tuple[Path, ...] = ()) -> dict:
    """The merged plain data of `path` and its `_base_` chain (no schema applied)."""
    path = Path(path).expanduser().resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise ConfigError(f"cyclic _base_ chain: {cycle}")
    origins = {} if origins is None else origins
    data = _read_file(path)
    base_ref = data.pop(BASE_KEY, None)
    merged: dict = {}
    if base_ref is not None:
        if not isinstance(base_ref, str) or not base_ref:
            raise ConfigError(f"config file {path}: _base_ must be one file path, got {base_ref!r}")
        base_path = (path.parent / base_ref).resolve()
        if not base_path.is_file():
            raise ConfigError(f"config file {path}: _base_ file '{base_ref}' not found (looked at {base_path})")
        merged = load_raw(base_path, origins, (*_chain, path))
    nested_base = [k for k in _nested_keys(data) if k.rsplit(".", 1)[-1] == BASE_KEY]
    if nested_base:
        raise ConfigError(f"config file {path}: '{nested_base[0]}': _base_ is only allowed at the top level")
    return _merge(merged, data, origins, str(path))


def _nested_keys(data: dict, prefix: str = ""):
    for key, value in data.items():
        yield prefix + key
        if isinstance(value, dict):
            yield from _nested_keys(value, prefix + key + ".")


def _is_text_type(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is str:
        return True
    if origin is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    if origin is typing.Union or origin is types.UnionType:
        return any(_is_text_type(a) for a in typing.get_args(tp) if a is not type(None))
    return False


def apply_overrides(schema: type, data: dict, overrides: Sequence[str], origins: dict[str, str]) -> dict:
    """Apply `a.b=value` strings to plain data; values are typed by the schema field they target."""
    data = _deep_copy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        tp = field_type(schema, key)
        if _is_text_type(tp) and text.strip() not in ("null", "~"):
            value: Any = text
        else:
            value = _parse_yaml(text, f"override '{item}'") if text.strip() else None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
        _record_origins(value, origins, f"override {item!r}", key)
    return data


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def load_config(path: str | Path, schema: type[T], overrides: Sequence[str] = ()) -> T:
    """Load `path` (with its `_base_` chain), apply `overrides`, and validate against `schema`."""
    origins: dict[str, str] = {}
    data = load_raw(path, origins)
    data = apply_overrides(schema, data, overrides, origins)
    return from_dict(schema, data, origins=origins)


class _Dumper(yaml.SafeDumper):
    """Block style for mappings, one-line flow style for lists of scalars (`[32, 64, 128]`); a string that
    the loader would read as a number (`"1e3"`) is quoted."""


_Dumper.yaml_implicit_resolvers = {k: list(v) for k, v in _StrictSafeLoader.yaml_implicit_resolvers.items()}


def _represent_list(dumper: _Dumper, data: list) -> yaml.Node:
    flow = all(not isinstance(item, (dict, list)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_config(config: Any) -> str:
    """The fully resolved config as YAML; `load_config` of this text gives an equal config."""
    return yaml.dump(to_dict(config), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def config_from_yaml_text(text: str, schema: type[T], source: str = "<text>") -> T:
    """Validate a resolved config stored as text (e.g. inside a run folder or a checkpoint)."""
    data = _parse_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source} does not hold a config mapping")
    return from_dict(schema, data, origins={k: source for k in _nested_keys(data)})
