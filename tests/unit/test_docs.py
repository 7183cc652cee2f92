"""The README documents every config key and every metrics column the code has."""

from __future__ import annotations

import dataclasses

import pytest

from astray.config import RunConfig
from astray.metrics import EPOCH_SCHEMA
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def _keys() -> list[str]:
    cfg = RunConfig()
    return [f"{section.name}.{f.name}" for section in dataclasses.fields(cfg)
            for f in dataclasses.fields(getattr(cfg, section.name))]


@pytest.mark.parametrize("key", _keys())
def test_every_config_key_is_in_the_readme(key):
    assert f"`{key}`" in README


@pytest.mark.parametrize("column", EPOCH_SCHEMA.names)
def test_every_metrics_column_is_in_the_readme(column):
    assert f"`{column}`" in README


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    assert "make run" in README and "make test" in README
    assert "make test" in (REPO / ".ci/run").read_text()


def _sweep_keys() -> list[str]:
    from astray.sweep_config import ResourcesConfig, SearchConfig, SweepConfig

    return [f"{name}.{f.name}" for name, cls in (("search", SearchConfig), ("sweep", SweepConfig),
                                                 ("resources", ResourcesConfig)) for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("key", _sweep_keys())
def test_every_sweep_key_is_in_the_readme(key):
    assert f"`{key}`" in README


def test_every_trials_column_is_in_the_readme():
    from astray.store import TRIAL_COLUMNS

    missing = [name for name, _ in TRIAL_COLUMNS if f"`{name}`" not in README]
    assert not missing
