"""Config loading: defaults, YAML files, --set overrides, and one-line errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from astray.config.load import build_config, load_config, save_config
from astray.config.run import RunConfig
from astray.errors import ConfigError
from astray.sparse import METHODS


def _error(path, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message, f"error message is not one line: {message!r}"
    return message


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_defaults_build_and_validate():
    cfg = load_config(None)
    assert isinstance(cfg, RunConfig)
    assert cfg == build_config({})
    # The dataclass defaults, and every method's settings at theirs (ast.<method>).
    assert dataclasses.replace(cfg, ast=dataclasses.replace(cfg.ast, methods={})) == RunConfig()
    assert {name: type(s)() for name, s in cfg.ast.methods.items()} == cfg.ast.methods
    assert set(cfg.ast.methods) == set(METHODS)
    assert 0 < cfg.ast.target_activation <= 1
    assert cfg.training.batch_size >= 2
    assert cfg.dataset.type == "digits"


def test_yaml_file_loads_into_typed_sections(tmp_path):
    path = _write(tmp_path, """\
model:
  name: test_resnet
dataset:
  type: synthetic
  num_classes: 4
  image_size: 16
ast:
  strategy: stale
  target_activation: 0.2
  kp: 2          # an int where a float is expected is fine
training:
  lr: 0.05
  epochs: 3
sweep:           # a section read by other commands is ignored, not rejected
  trials: 4
""")
    cfg = load_config(path)
    assert cfg.model.name == "test_resnet"
    assert cfg.dataset.type == "synthetic" and cfg.dataset.num_classes == 4
    assert cfg.ast.strategy == "stale"
    assert cfg.ast.target_activation == pytest.approx(0.2)
    assert cfg.ast.kp == 2.0 and isinstance(cfg.ast.kp, float)
    assert cfg.training.lr == pytest.approx(0.05)
    assert cfg.training.epochs == 3
    # untouched keys keep their defaults
    assert cfg.training.batch_size == RunConfig().training.batch_size


def test_empty_yaml_file_gives_defaults(tmp_path):
    assert load_config(_write(tmp_path, "")) == build_config({})


def test_overrides_are_typed(tmp_path):
    path = _write(tmp_path, {"training": {"lr": 0.5}, "dataset": {"augment": True}})
    cfg = load_config(path, ["ast.target_activation=0.3", "training.lr=1e-3", "dataset.augment=false"])
    assert cfg.ast.target_activation == 0.3 and isinstance(cfg.ast.target_activation, float)
    # PyYAML reads 1e-3 (no dot) as a string; the config still takes it as a float
    assert cfg.training.lr == pytest.approx(1e-3) and isinstance(cfg.training.lr, float)
    assert cfg.dataset.augment is False


def test_yaml_exponent_without_dot_in_file_is_a_float(tmp_path):
    cfg = load_config(_write(tmp_path, "training:\n  lr: 1e-3\n  weight_decay: 5e-4\n"))
    assert cfg.training.lr == pytest.approx(1e-3)
    assert cfg.training.weight_decay == pytest.approx(5e-4)


def test_override_without_file_and_override_wins_over_file(tmp_path):
    assert load_config(None, ["training.epochs=7"]).training.epochs == 7
    path = _write(tmp_path, {"training": {"epochs": 3}})
    assert load_config(path, ["training.epochs=9"]).training.epochs == 9


def test_save_then_load_round_trip(tmp_path):
    cfg = load_config(None, ["ast.strategy=reforward", "training.lr=0.01", "model.name=test_resnet"])
    path = tmp_path / "saved.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg


def test_unknown_key_names_dotted_key_and_suggests_match():
    message = _error(None, ["ast.target_activaton=0.3"])
    assert "ast.target_activaton" in message
    assert "did you mean target_activation" in message


def test_unknown_key_in_file(tmp_path):
    message = _error(_write(tmp_path, {"training": {"batchsize": 8}}))
    assert "training.batchsize" in message
    assert "batch_size" in message


def test_unknown_section_suggests_close_match(tmp_path):
    message = _error(_write(tmp_path, {"trainig": {"lr": 0.1}}))
    assert "trainig" in message
    assert "did you mean training" in message


@pytest.mark.parametrize("override, key", [
    ("training.epochs=ten", "training.epochs"),
    ("training.batch_size=2.5", "training.batch_size"),
    ("dataset.augment=3", "dataset.augment"),
    ("training.lr=fast", "training.lr"),
    ("model.name=[1, 2]", "model.name"),
])
def test_wrong_type_names_key(override, key):
    message = _error(None, [override])
    assert key in message
    assert "wrong type" in message


@pytest.mark.parametrize("override, key", [
    ("ast.target_activation=0", "ast.target_activation"),
    ("ast.target_activation=1.5", "ast.target_activation"),
    ("ast.target_activation=-0.1", "ast.target_activation"),
    ("ast.kp=-1", "ast.kp"),
    ("training.batch_size=1", "training.batch_size"),
    ("training.epochs=0", "training.epochs"),
    ("dataset.num_classes=1", "dataset.num_classes"),
    ("ast.strategy=masked", "ast.strategy"),
])
def test_out_of_range_or_not_allowed_names_key(override, key):
    message = _error(None, [override])
    assert key in message


def test_target_activation_of_one_is_allowed():
    assert load_config(None, ["ast.target_activation=1"]).ast.target_activation == 1.0


def test_folder_dataset_with_missing_dir_names_the_path(tmp_path):
    missing = tmp_path / "no_such_train_dir"
    (tmp_path / "val").mkdir()
    message = _error(None, ["dataset.type=folder", f"dataset.train_dir={missing}",
                            f"dataset.val_dir={tmp_path / 'val'}"])
    assert "dataset.train_dir" in message
    assert str(missing) in message


def test_folder_dataset_without_dirs_names_the_key():
    message = _error(None, ["dataset.type=folder"])
    assert "dataset.train_dir" in message


def test_hf_dataset_with_missing_path_names_the_path(tmp_path):
    missing = tmp_path / "nothing_here"
    message = _error(None, ["dataset.type=hf", f"dataset.hf_path={missing}"])
    assert "dataset.hf_path" in message and str(missing) in message


@pytest.mark.parametrize("override, fragment", [
    ("foo", "'foo'"),
    ("noDot=1", "'noDot'"),
    (".lr=1", "'.lr'"),
])
def test_bad_set_syntax(override, fragment):
    message = _error(None, [override])
    assert fragment in message


def test_set_into_a_scalar_is_an_error(tmp_path):
    message = _error(_write(tmp_path, {"training": 5}), ["training.lr=0.1"])
    assert "training" in message


def test_section_that_is_not_a_mapping(tmp_path):
    message = _error(_write(tmp_path, {"training": 5}))
    assert "training" in message


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = _write(tmp_path, "training:\n  lr: [0.1\n  epochs: 3\n")
    message = _error(path)
    assert str(path) in message
    assert "YAML" in message


def test_top_level_list_is_rejected(tmp_path):
    path = _write(tmp_path, "- a\n- b\n")
    message = _error(path)
    assert str(path) in message


def test_missing_config_file_names_the_path(tmp_path):
    path = tmp_path / "absent.yaml"
    message = _error(path)
    assert str(path) in message


def test_each_method_owns_a_typed_section_of_ast(tmp_path):
    cfg = load_config(None, ["ast.strategy=stale", "ast.stale.max_age=3", "ast.infobatch.prune_ratio=0.8"])
    assert cfg.ast.methods["stale"].max_age == 3 and cfg.ast.methods["infobatch"].prune_ratio == 0.8
    assert cfg.to_dict()["ast"]["stale"] == {"keep_prob": 0.0, "max_age": 3}
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg  # a saved run's config reads back as it ran


@pytest.mark.parametrize("overrides, needle", [
    (["ast.stale.max_age=-1"], "ast.stale.max_age=-1 is out of range"),
    (["ast.stale.keep_prob=oops"], "ast.stale.keep_prob='oops' has the wrong type"),
    (["ast.reforward.buckets=4"], "unknown config key 'ast.reforward.buckets' (did you mean shape_buckets?)"),
    (["ast.masked.rate=0.5"], "unknown config key 'ast.masked'"),
    (["ast.strategy=masked"], "ast.strategy='masked' is not allowed; choose one of dense, reforward, stale"),
    (["ast.stale_max_age=3"], "ast.stale_max_age is now ast.stale.max_age"),
    (["ast.shape_buckets=4"], "ast.shape_buckets is now ast.reforward.shape_buckets"),
    (["ast.reforward.score_scale=0"], "ast.reforward.score_scale=0.0 is out of range; allowed (0, 1]"),
    (["ast.reforward.score_scale=1.5"], "ast.reforward.score_scale=1.5 is out of range; allowed (0, 1]"),
    (["ast.score_scale=0.5"], "ast.score_scale is now ast.reforward.score_scale"),
])
def test_method_settings_errors_are_one_line(overrides, needle):
    message = _error(None, overrides)
    assert needle in message and "\n" not in message


def test_a_config_saved_before_methods_had_sections_still_loads():
    from astray.config.load import build_saved_config

    cfg = build_saved_config({"ast": {"strategy": "stale", "stale_max_age": 2, "infobatch_anneal": 0.5}})
    assert cfg.ast.methods["stale"].max_age == 2 and cfg.ast.methods["infobatch"].anneal == 0.5


def test_a_search_objective_on_the_test_split_is_refused_in_one_line(tmp_path):
    """The test split never selects anything: searching on it is a config error."""
    import yaml

    from astray.config.sweep import load_sweep_spec

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs/quickstart.yaml").read_text())
    raw["search"]["objectives"] = [{"metric": "test_acc", "mode": "max"}, {"metric": "energy_j", "mode": "min"}]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_sweep_spec(str(path))
    message = str(info.value)
    assert "search.objectives[0].metric='test_acc'" in message and "val_acc" in message and "\n" not in message
