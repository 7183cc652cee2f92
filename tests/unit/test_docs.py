"""The docs hold every config key (with its default), every method, every metrics and store
column the code has; the README stays a front door that names what the code names."""

from __future__ import annotations

import dataclasses
import re

import pytest

from astray.config.load import build_config
from astray.engine.records import METRICS_SCHEMA
from astray.sparse import METHODS
from astray.sparse.method import methods_table
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
CONFIG_DOC = (REPO / "docs" / "config.md").read_text()
README_MAX_LINES = 350


def _defaults() -> dict[str, object]:
    """Every run-config key (each method's ``ast.<method>.<key>`` and the keys of sections
    inside sections, ``dataset.label_noise.rate``, included) → its default."""
    out: dict[str, object] = {}

    def walk(tree: dict, prefix: str) -> None:
        for k, v in tree.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v

    for section, values in build_config({}).to_dict().items():
        walk(values, f"{section}.")
    return out


@pytest.mark.parametrize("key", sorted(_defaults()))
def test_every_config_key_is_in_the_config_reference(key):
    assert f"`{key}`" in CONFIG_DOC


@pytest.mark.parametrize("column", METRICS_SCHEMA.names)
def test_every_metrics_column_is_in_the_config_reference(column):
    assert f"`{column}`" in CONFIG_DOC


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    assert "make run" in README and "make test" in README
    assert "make test" in (REPO / ".ci/run").read_text()


def test_the_readme_is_a_front_door():
    assert len(README.splitlines()) <= README_MAX_LINES
    for doc in ("docs/config.md", "docs/training.md", "docs/sweeps.md", "docs/reports.md", "docs/benchmarks.md",
                "docs/design.md", "clusters/README.md"):
        assert f"({doc})" in README, doc
        assert (REPO / doc).is_file(), doc
    for command in ("train", "tune", "report", "export", "eval", "explain"):
        assert f"python -m astray.{command} " in README, command


def test_the_readme_methods_table_is_the_registry():
    """The one list of method names: README's table is built from it, row for row."""
    assert methods_table() in README


def _sweep_keys() -> list[str]:
    from astray.config.sweep import ResourcesConfig, SearchConfig, SweepConfig

    return [f"{name}.{f.name}" for name, cls in (("search", SearchConfig), ("sweep", SweepConfig),
                                                 ("resources", ResourcesConfig)) for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("key", _sweep_keys())
def test_every_sweep_key_is_in_the_config_reference(key):
    assert f"`{key}`" in CONFIG_DOC


def test_every_trials_column_is_in_the_config_reference():
    from astray.sweep.store import TRIAL_COLUMNS

    missing = [name for name, _ in TRIAL_COLUMNS if f"`{name}`" not in CONFIG_DOC]
    assert not missing


def _table_defaults(first_header: str) -> dict[str, str]:
    """``dotted key → the default cell`` of a README table whose first header is given."""
    lines = CONFIG_DOC.split(f"| {first_header} | default |", 1)[1].splitlines()[2:]
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


def test_config_reference_defaults_are_the_dataclass_defaults():
    documented = _table_defaults("key")
    wrong = {key: (documented.get(key), value) for key, value in _defaults().items()
             if not _same(documented.get(key, "?"), value)}
    assert not wrong


def test_config_reference_sweep_defaults_are_the_dataclass_defaults():
    from astray.config.sweep import ResourcesConfig, SearchConfig, SweepConfig

    documented = _table_defaults("sweep key")
    prose = {"search.space": "the four AST knobs", "search.objectives": "`val_acc` max, `energy_j` min",
             "sweep.storage": "<results_dir>/<name>/ray", "sweep.early_stop": "off"}
    wrong = {}
    for name, cls in (("search", SearchConfig), ("sweep", SweepConfig), ("resources", ResourcesConfig)):
        defaults = cls()
        for f in dataclasses.fields(cls):
            key = f"{name}.{f.name}"
            ok = documented[key] == prose[key] if key in prose else _same(documented[key], getattr(defaults, f.name))
            if not ok:
                wrong[key] = documented[key]
            value = getattr(defaults, f.name)
            if dataclasses.is_dataclass(value):  # a section inside the section (sweep.early_stop)
                for sub in dataclasses.fields(value):
                    if not _same(documented.get(f"{key}.{sub.name}", "?"), getattr(value, sub.name)):
                        wrong[f"{key}.{sub.name}"] = documented.get(f"{key}.{sub.name}")
    assert not wrong
    assert [o for o in SearchConfig().objectives] == [{"metric": "val_acc", "mode": "max"},
                                                       {"metric": "energy_j", "mode": "min"}]
    assert sorted(SearchConfig().space) == ["ast.entropy_weight", "ast.ki", "ast.kp", "ast.target_activation"]
    assert SweepConfig().storage == ""  # "" means <results_dir>/<name>/ray (astray.sweep.trial_config)
