"""The shipped configs load and validate, and the sweep sections fail clearly when wrong."""

from __future__ import annotations

import pytest

from astray.errors import ConfigError
from astray.config.sweep import load_sweep_spec
from tests.conftest import REPO


def _with_dirs(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    return [f"dataset.train_dir={tmp_path / 'train'}", f"dataset.val_dir={tmp_path / 'val'}"]


def test_quickstart_is_a_complete_sweep_on_embedded_data():
    spec = load_sweep_spec(str(REPO / "configs/quickstart.yaml"))
    assert spec.run.dataset.type == "digits" and spec.run.training.device == "auto"
    assert {p.key for p in spec.search.params} == {"ast.kp", "ast.ki", "ast.target_activation", "ast.entropy_weight"}
    assert [(o.metric, o.mode) for o in spec.search.parsed_objectives] == [("val_acc", "max"), ("energy_j", "min")]


@pytest.mark.parametrize("name", ["cifar10", "imagenet"])
def test_gpu_configs_validate(tmp_path, name):
    spec = load_sweep_spec(str(REPO / f"configs/{name}.yaml"), _with_dirs(tmp_path))
    assert spec.run.dataset.type == "folder" and spec.run.training.mixed_precision == "bf16"
    assert spec.run.model.channels_last and spec.run.dataset.pin_memory and spec.run.dataset.num_workers > 0
    assert spec.resources.gpus_per_worker > 0


def test_imagenet_recipe_is_multi_gpu_resnet50(tmp_path):
    spec = load_sweep_spec(str(REPO / "configs/imagenet.yaml"), _with_dirs(tmp_path))
    assert spec.run.model.name == "resnet50" and spec.run.dataset.num_classes == 1000
    assert spec.resources.workers_per_trial > 1 and spec.resources.gpus_per_worker == 1
    assert spec.run.dataset.image_size == 224


def test_gpu_configs_name_their_missing_data(tmp_path):
    with pytest.raises(ConfigError, match="dataset.train_dir"):
        load_sweep_spec(str(REPO / "configs/imagenet.yaml"), [f"dataset.train_dir={tmp_path}/nope"])


@pytest.mark.parametrize("override, needle", [
    ("search.space={ast.kp: {type: normal, low: 0, high: 1}}", "search.space.ast.kp.type"),
    ("search.space={ast.nope: {type: uniform, low: 0, high: 1}}", "search.space.ast.nope"),
    ("search.space={ast.kp: {type: loguniform, low: 0, high: 1}}", "must be > 0"),
    ("search.space={ast.kp: {type: uniform, low: 2, high: 1}}", "must be below"),
    ("search.space={ast.strategy: {type: choice, values: [stale, masked]}}", "'masked'"),
    ("search.objectives=[{metric: accuracy, mode: max}]", "search.objectives[0].metric"),
    ("search.sampler=grid", "search.sampler"),
    ("search.max_concurrent=0", "search.max_concurrent"),
    ("sweep.name=a/b", "sweep.name"),
    ("resources.workers_per_trial=2", None),
    ("resources.placement_strategy=RANDOM", "resources.placement_strategy"),
])
def test_bad_sweep_sections(override, needle):
    if needle is None:  # valid
        load_sweep_spec(str(REPO / "configs/quickstart.yaml"), [override])
        return
    with pytest.raises(ConfigError) as err:
        load_sweep_spec(str(REPO / "configs/quickstart.yaml"), [override])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_choice_space_over_strategy_and_int_space():
    spec = load_sweep_spec(str(REPO / "configs/quickstart.yaml"), [
        "search.space={ast.strategy: {type: choice, values: [reforward, stale]}, "
        "training.batch_size: {type: int, low: 16, high: 64, step: 16}}"])
    kinds = {p.key: p.arrow_type() for p in spec.search.params}
    assert str(kinds["ast.strategy"]) == "string" and str(kinds["training.batch_size"]) == "int64"


def test_fashion_config_reads_the_debian_files_or_says_where_they_come_from(tmp_path):
    spec = load_sweep_spec(str(REPO / "configs/fashion.yaml"), [f"dataset.root={tmp_path}"])
    assert spec.run.dataset.type == "fashion_mnist" and spec.run.dataset.image_size == 28
    assert spec.run.ast.strategy == "stale" and spec.run.ast.warmup_epochs >= 1
    with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist"):
        load_sweep_spec(str(REPO / "configs/fashion.yaml"), [f"dataset.root={tmp_path / 'absent'}"])


def test_the_noisy_fashion_sweep_searches_the_robust_significance(tmp_path):
    """configs/fashion_noisy.yaml: 40 % noise, the method, its significance, the band and
    the irreducible-loss epochs searched; its trials resolve, and its baselines train
    plain loss without a band (they select by nothing)."""
    from astray.config.load import build_config
    from astray.sweep.trial_config import resolved_trial_run, trial_run_config

    spec = load_sweep_spec(str(REPO / "configs/fashion_noisy.yaml"), [f"dataset.root={tmp_path}"])
    assert spec.run.dataset.label_noise.rate == 0.4 and spec.run.dataset.label_noise.kind == "symmetric"
    keys = {p.key for p in spec.search.params}
    assert {"ast.strategy", "ast.significance", "ast.upper_quantile", "ast.irreducible.epochs"} <= keys
    trial = resolved_trial_run(spec, {"ast.strategy": "stale", "ast.significance": "reducible",
                                      "ast.upper_quantile": 0.8, "ast.target_activation": 0.3,
                                      "ast.irreducible.epochs": 3, "seed": 1})
    assert trial["ast"]["strategy"] == "stale" and trial["ast"]["significance"] == "reducible"
    assert trial["ast"]["upper_quantile"] == 0.8 and trial["ast"]["irreducible"]["epochs"] == 3
    assert trial["dataset"]["label_noise"]["rate"] == 0.4
    budgets = [b.value for b in spec.search.parsed_baselines if b.kind == "dense"]
    assert budgets == [1.0, 0.75, 0.5, 0.3]
    for b in spec.search.parsed_baselines:
        run = build_config(trial_run_config(spec, {"baseline_kind": b.kind, "baseline_value": b.value}))
        assert run.ast.significance == "loss" and run.ast.upper_quantile == 1.0
        assert run.dataset.label_noise.rate == 0.4  # the baselines see the same noisy labels
