"""The README documents every config key and every metrics column the code has."""

from __future__ import annotations

import dataclasses
import re

import pytest

from astray.config.run import RunConfig
from astray.engine.records import EPOCH_SCHEMA
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
    from astray.config.sweep import ResourcesConfig, SearchConfig, SweepConfig

    return [f"{name}.{f.name}" for name, cls in (("search", SearchConfig), ("sweep", SweepConfig),
                                                 ("resources", ResourcesConfig)) for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("key", _sweep_keys())
def test_every_sweep_key_is_in_the_readme(key):
    assert f"`{key}`" in README


def test_every_trials_column_is_in_the_readme():
    from astray.sweep.store import TRIAL_COLUMNS

    missing = [name for name, _ in TRIAL_COLUMNS if f"`{name}`" not in README]
    assert not missing


def _table_defaults(first_header: str) -> dict[str, str]:
    """``dotted key → the default cell`` of a README table whose first header is given."""
    lines = README.split(f"| {first_header} | default |", 1)[1].splitlines()[2:]
    out: dict[str, str] = {}
    for line in lines:
        if not line.startswith("|"):
            break
        key_cell, default_cell = [c.strip() for c in line.strip("|").split("|")[:2]]
        keys = re.findall(r"`([^`]+)`", key_cell)
        values = re.findall(r"`([^`]+)`", default_cell)
        if len(values) == len(keys) and re.fullmatch(r"(`[^`]*`(, )?)+", default_cell):
            out.update(zip(keys, values))
        else:
            out.update((k, default_cell) for k in keys)  # prose or "—": checked by the caller
    return out


def _same(doc: str, value: object) -> bool:
    if value is None:
        return doc == "—"
    if isinstance(value, bool):
        return doc == str(value).lower()
    if isinstance(value, (int, float)):
        try:
            return float(doc) == float(value)
        except ValueError:
            return False
    return doc == str(value)


def test_readme_config_defaults_are_the_dataclass_defaults():
    documented = _table_defaults("key")
    cfg = RunConfig()
    wrong = {}
    for key in _keys():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not _same(documented[key], value):
            wrong[key] = (documented[key], value)
    assert not wrong


def test_readme_sweep_defaults_are_the_dataclass_defaults():
    from astray.config.sweep import ResourcesConfig, SearchConfig, SweepConfig

    documented = _table_defaults("sweep key")
    prose = {"search.space": "the four AST knobs", "search.objectives": "`val_acc` max, `energy_j` min",
             "sweep.storage": "<results_dir>/<name>/ray"}
    wrong = {}
    for name, cls in (("search", SearchConfig), ("sweep", SweepConfig), ("resources", ResourcesConfig)):
        defaults = cls()
        for f in dataclasses.fields(cls):
            key = f"{name}.{f.name}"
            ok = documented[key] == prose[key] if key in prose else _same(documented[key], getattr(defaults, f.name))
            if not ok:
                wrong[key] = documented[key]
    assert not wrong
    assert [o for o in SearchConfig().objectives] == [{"metric": "val_acc", "mode": "max"},
                                                       {"metric": "energy_j", "mode": "min"}]
    assert sorted(SearchConfig().space) == ["ast.entropy_weight", "ast.ki", "ast.kp", "ast.target_activation"]
    assert SweepConfig().storage == ""  # "" means <results_dir>/<name>/ray (astray.sweep.trial_config)
