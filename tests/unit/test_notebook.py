"""``astray.load_sweep`` and ``astray.front``: a real store on disk, read as DataFrames."""

from __future__ import annotations

import pandas as pd
import pytest

import astray
from astray.errors import AstrayError, ConfigError
from astray.schema import Objective
from tests.unit.test_report import build_store, sweep_rows


@pytest.fixture()
def sweep(tmp_path):
    return astray.load_sweep(build_store(tmp_path / "s", sweep_rows()))


def test_trials_and_epochs_come_back_typed(sweep):
    t = sweep.trials.set_index("trial_id")
    assert len(t) == 8 and set(sweep.searched) == {"ast.target_activation", "ast.kp"}
    assert t["is_baseline"].dtype == bool and t["is_baseline"].tolist().count(True) == 1
    # A store written before baselines had kinds: its one baseline is dense at the whole budget.
    assert t.loc["base", "baseline_kind"] == "dense" and t.loc["t1", "baseline_kind"] == ""
    assert t.loc["base", "budget"] == 1.0 and t["replicate"].dtype == "int64"
    assert t.loc["t1", "config_id"] == "t1"  # each legacy trial is its own configuration
    assert pd.api.types.is_float_dtype(t["ast.kp"]) and t.loc["t2", "ast.kp"] == pytest.approx(2.5)
    assert pd.api.types.is_float_dtype(t["val_acc"])
    e = sweep.epochs
    assert set(e["trial_id"]) == {"base", "t1", "t2", "t3", "t4", "div", "err"}  # the running one has none yet
    assert e.groupby("trial_id")["epoch"].apply(list).loc["t1"] == [1, 2, 3]
    assert sweep.objectives == (Objective("val_acc", True), Objective("energy_j", False))


def test_front_keeps_the_non_dominated_rows(sweep):
    done = sweep.trials[(sweep.trials.status == "completed") & ~sweep.trials.is_baseline]
    assert set(astray.front(done)["trial_id"]) == {"t1", "t2", "t4"}  # t2 and t4 tie: both kept; t3 is beaten
    # Any objectives, as strings or Objective values; a third axis can bring a point back.
    cheap_first = astray.front(done, ["energy_j:min", Objective("val_acc", True)])
    assert set(cheap_first["trial_id"]) == {"t1", "t2", "t4"}
    everything = astray.front(sweep.trials, "val_acc:max,energy_j:min")
    assert "run" in set(everything["trial_id"])  # unfinished rows are the caller's to filter
    assert "err" not in set(everything["trial_id"])  # NaN objectives never are on a front


@pytest.mark.parametrize("objectives,message", [
    (["val_acc:max", "joules:min"], "unknown metric 'joules'"),
    (["val_acc:up", "energy_j:min"], "direction 'up'"),
    (["val_acc"], "METRIC:max or METRIC:min"),
    (["val_acc:max"], "at least two objectives"),
])
def test_bad_objectives_are_one_line_errors(sweep, objectives, message):
    with pytest.raises(ConfigError) as info:
        astray.front(sweep.trials, objectives)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_frame_without_the_objective_column_is_a_clear_error(sweep):
    with pytest.raises(AstrayError, match="has no column energy_j"):
        astray.front(sweep.trials.drop(columns=["energy_j"]))


def test_a_path_that_is_no_store_is_a_clear_error(tmp_path):
    with pytest.raises(AstrayError, match="has no trials/ folder"):
        astray.load_sweep(tmp_path)


def test_import_astray_stays_light():
    """Every command and Ray trial imports astray: the notebook API must not drag pandas in."""
    import subprocess

    from tests.conftest import PYTHON

    code = "import sys, astray; assert 'pandas' not in sys.modules, 'pandas imported'; astray.front"
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
