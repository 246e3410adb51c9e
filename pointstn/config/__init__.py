"""Configs: frozen dataclass schemas loaded from YAML (one `_base_`, `a.b=value` overrides)."""

from pointstn.config.convert import ConfigError, from_dict, param, to_dict
from pointstn.config.load import config_from_yaml_text, dump_config, load_config
from pointstn.config.schema import ExperimentConfig

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "config_from_yaml_text",
    "dump_config",
    "from_dict",
    "load_config",
    "param",
    "to_dict",
]
