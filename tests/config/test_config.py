"""Config loading: schema checks, `_base_`, overrides, safe YAML, dump/reload."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pointstn.config import ConfigError, ExperimentConfig, config_from_yaml_text, dump_config, load_config, to_dict
from pointstn.config.schema import DataConfig

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
DATASET_CONFIGS = sorted((REPO / "configs" / "data").glob("*.yaml"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_repository_has_experiment_configs():
    names = {p.name for p in EXPERIMENT_CONFIGS}
    assert {"base.yaml", "smoke.yaml"} <= names


@pytest.mark.parametrize("path", EXPERIMENT_CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_round_trips(path, tmp_path):
    config = load_config(path, ExperimentConfig)
    dumped = write(tmp_path / "resolved.yaml", dump_config(config))
    assert load_config(dumped, ExperimentConfig) == config
    assert config_from_yaml_text(dump_config(config), ExperimentConfig) == config


@pytest.mark.parametrize("path", DATASET_CONFIGS, ids=lambda p: p.name)
def test_every_dataset_config_loads_and_round_trips(path, tmp_path):
    from pointstn.data.config import DatasetConfig

    config = load_config(path, DatasetConfig)
    dumped = write(tmp_path / "resolved.yaml", dump_config(config))
    assert load_config(dumped, DatasetConfig) == config


def test_nested_library_dataclasses_are_validated_with_the_file_named(tmp_path):
    from pointstn.data.config import DatasetConfig

    path = write(tmp_path / "data.yaml", "rig: {fov_y_deg: 5.0}\n")
    with pytest.raises(ConfigError, match=r"config section 'rig' \(set in .*data.yaml\): Rig: a sphere"):
        load_config(path, DatasetConfig)
    path = write(tmp_path / "pair.yaml", "rig: {distance_range_m: [1.0, 2.0, 3.0]}\n")
    with pytest.raises(ConfigError, match="expected a list of 2 items"):
        load_config(path, DatasetConfig)


def test_base_is_resolved_relative_to_the_file_not_the_cwd(tmp_path, monkeypatch):
    write(tmp_path / "cfg" / "common" / "base.yaml", "train: {lr: 0.5, batch_size: 3}\nname: base\n")
    child = write(tmp_path / "cfg" / "exp.yaml", "_base_: common/base.yaml\ntrain: {batch_size: 7}\n")
    monkeypatch.chdir(tmp_path)  # far from cfg/
    config = load_config(child, ExperimentConfig)
    assert (config.name, config.train.lr, config.train.batch_size) == ("base", 0.5, 7)
    # keys the files do not set keep the schema defaults
    assert config.train.seed == ExperimentConfig().train.seed


def test_base_chain_merges_mappings_and_replaces_lists(tmp_path):
    write(tmp_path / "a.yaml", "model: {decoder: {channels: [8, 16, 32], resolution: 64}}\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\nmodel: {decoder: {kind: dense}}\n")
    c = write(tmp_path / "c.yaml", "_base_: b.yaml\nmodel: {decoder: {channels: [4, 8]}}\n")
    decoder = load_config(c, ExperimentConfig).model.decoder
    assert (decoder.kind, decoder.resolution, decoder.channels) == ("dense", 64, (4, 8))


@pytest.mark.parametrize(
    "text, message",
    [
        ("train: {lrr: 0.1}\n", "unknown config key 'train.lrr'"),
        ("bogus: 1\n", "unknown config key 'bogus'"),
        ("train: {lr: fast}\n", "'train.lr'"),
        ("train: {batch_size: 2.5}\n", "expected an integer"),
        ("train: {batch_size: -4}\n", "must be >= 1"),
        ("data: {augment: 1}\n", "expected true or false"),
        ("train: {lr: .nan}\n", "finite"),
        ("model: {decoder: {resolution: 1000000}}\n", "must be <= 256"),
        ("model: {decoder: {kind: octree}}\n", "must be one of 'sparse', 'dense', 'none'"),
        ("model: {decoder: {resolution: 36, channels: [8, 16, 32, 64]}}\n", "divisible"),
        ("model: {decoder: {channels: 8}}\n", "expected a list"),
        ("model: 3\n", "expected a mapping"),
        ("eval: {frames: [shape, world]}\n", "unknown frame 'world'"),
        ("train: {lr: 0.1}\ntrain: {lr: 0.2}\n", "duplicate key 'train'"),
        ("[1, 2]\n", "must hold a mapping"),
        ("train: {lr: [\n", "cannot be parsed"),
    ],
)
def test_bad_values_name_the_key_and_file(tmp_path, text, message):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path, ExperimentConfig)
    assert message in str(info.value)
    if "key '" in message or "'train.lr'" in message:
        assert str(path) in str(info.value)


def test_empty_missing_and_cyclic_files(tmp_path):
    empty = write(tmp_path / "empty.yaml", "# nothing\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(empty, ExperimentConfig)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", ExperimentConfig)
    orphan = write(tmp_path / "orphan.yaml", "_base_: gone/base.yaml\n")
    with pytest.raises(ConfigError, match="_base_ file 'gone/base.yaml' not found"):
        load_config(orphan, ExperimentConfig)
    write(tmp_path / "x.yaml", "_base_: y.yaml\n")
    write(tmp_path / "y.yaml", "_base_: x.yaml\n")
    with pytest.raises(ConfigError, match="cyclic _base_ chain: .*x.yaml -> .*y.yaml -> .*x.yaml"):
        load_config(tmp_path / "x.yaml", ExperimentConfig)
    me = write(tmp_path / "me.yaml", "_base_: me.yaml\n")
    with pytest.raises(ConfigError, match="cyclic"):
        load_config(me, ExperimentConfig)
    nested = write(tmp_path / "nested.yaml", "train: {_base_: x.yaml}\n")
    with pytest.raises(ConfigError, match="only allowed at the top level"):
        load_config(nested, ExperimentConfig)


def test_python_tags_are_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"name: !!python/object/apply:os.system ['touch {marker}']\n"
    path = write(tmp_path / "evil.yaml", payload)
    with pytest.raises(ConfigError, match="cannot be parsed as safe YAML"):
        load_config(path, ExperimentConfig)
    assert not marker.exists()


def test_overrides_are_typed_by_the_schema(tmp_path):
    base = write(tmp_path / "exp.yaml", "name: exp\n")
    config = load_config(
        base,
        ExperimentConfig,
        [
            "train.lr=0.25",
            "train.batch_size=5",
            "data.augment=false",
            "model.decoder.kind=dense",
            "model.decoder.channels=[4, 8]",
            "name=123",  # a string field keeps the text, it is not parsed as a number
            "output_dir=null",
        ],
    )
    assert config.train.lr == 0.25 and config.train.batch_size == 5 and config.data.augment is False
    assert config.model.decoder.kind == "dense" and config.model.decoder.channels == (4, 8)
    assert config.name == "123" and config.output_dir is None


def test_exponents_without_a_decimal_point_are_numbers_in_files_and_overrides(tmp_path):
    """PyYAML (YAML 1.1) would read `1e-4` as a string; users, docs/CONFIG.md and YAML 1.2 mean a number."""
    path = write(tmp_path / "exp.yaml", "train: {lr: 1e-4, weight_decay: 5E-6}\n")
    config = load_config(path, ExperimentConfig, ["train.grad_clip=2e+1", "name=1e3"])
    assert (config.train.lr, config.train.weight_decay, config.train.grad_clip) == (1e-4, 5e-6, 20.0)
    assert config.name == "1e3"  # a string field keeps the text
    assert load_config(write(tmp_path / "round.yaml", dump_config(config)), ExperimentConfig) == config
    with pytest.raises(ConfigError, match="expected an integer, got float 1000.0"):
        load_config(path, ExperimentConfig, ["train.batch_size=1e3"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "unknown config key 'train.lrr'"),
        ("train.lr", "must look like key.sub=value"),
        ("train.batch_size=many", "override 'train.batch_size=many'"),
        ("train.lr.x=1", "has no sub-keys"),
        ("model=3", "expected a mapping"),
        ("train.lr=.nan", "finite"),
        ("train.lr=nan", "expected a number"),
    ],
)
def test_bad_overrides(tmp_path, override, message):
    base = write(tmp_path / "exp.yaml", "name: exp\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config(base, ExperimentConfig, [override])


def test_dump_holds_every_field_and_is_stable():
    config = ExperimentConfig()
    data = to_dict(config)
    assert set(data) == {f.name for f in dataclasses.fields(ExperimentConfig)}
    assert set(data["data"]) == {f.name for f in dataclasses.fields(DataConfig)}
    assert dump_config(config) == dump_config(config_from_yaml_text(dump_config(config), ExperimentConfig))


def test_configs_are_frozen():
    config = ExperimentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.lr = 1.0  # type: ignore[misc]
