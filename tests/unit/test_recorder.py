"""The sweep driver's bookkeeping: trial events in, store rows and the plan's results out."""

from __future__ import annotations

import functools
import json

import optuna
import pytest

from astray.config.sweep import load_sweep_spec
from astray.engine.records import EpochRow
from astray.sweep.plan import TrialPlan
from astray.sweep.recorder import SweepRecorder
from astray.sweep.store import ResultStore, read_epochs, read_trials
from astray.sweep.study import SweepStudy
from astray.sweep.trial_config import resolved_trial_run
from tests.conftest import REPO

SPEC = load_sweep_spec(str(REPO / "configs/quickstart.yaml"), [
    "search.space={ast.kp: {type: loguniform, low: 0.1, high: 5.0}}", "search.sampler=random",
    "search.baselines={}", "search.num_samples=1", "search.repeats=1", "training.epochs=3"])


def epoch(n: int, val_acc: float = 0.5) -> dict:
    return EpochRow(epoch=n, train_loss=1.0, train_acc=0.5, val_loss=1.0, val_acc=val_acc, val_macro_f1=0.5,
                    test_loss=1.0, test_acc=val_acc - 0.01, test_macro_f1=0.5,
                    activation_rate=1.0, threshold=1.0, samples_total=10, samples_forward=10, samples_backward=10,
                    flops=1.0, flops_dense=1.0, train_time_s=1.0, time_s=float(n), energy_j=10.0, val_energy_j=1.0,
                    energy_source="model", energy_scope="process", idle_w=0.0, lr=0.1, strategy="dense").as_dict()


def driver(tmp_path) -> tuple[SweepRecorder, TrialPlan]:
    """A driver's recorder and plan over the store in ``tmp_path`` (as runner.run_sweep builds them)."""
    store = ResultStore(tmp_path, {p.key: p.arrow_type() for p in SPEC.search.params}).open()
    recorder = SweepRecorder(store, SPEC, echo=lambda line: None).load()
    study = SweepStudy(SPEC.search, "s", tmp_path / "journal.log")
    recorder.plan = TrialPlan((), 1, 1, 0, SPEC.search.parsed_objectives, study, recorder.records.values(),
                              resolve=functools.partial(resolved_trial_run, SPEC))
    return recorder, recorder.plan


def test_a_continuing_attempt_fills_the_epochs_its_killed_driver_never_wrote(tmp_path):
    recorder, plan = driver(tmp_path)
    config = plan.next_trial()
    recorder.on_start(config)
    recorder.on_result(config, {"epoch_row": json.dumps(epoch(1))})
    # The driver dies after Ray saved epoch 2's checkpoint, before it wrote epoch 2's row.
    recorder, plan = driver(tmp_path)
    again = plan.next_trial()
    assert again["trial_id"] == config["trial_id"]
    recorder.on_start(again)
    # The new attempt restored epochs 1-2 and trains epoch 3; its first report re-sends the history.
    recorder.on_result(again, {"epoch_rows": json.dumps([epoch(1), epoch(2, 0.7)]),
                               "epoch_row": json.dumps(epoch(3, 0.6))})
    recorder.on_complete(again)
    epochs = read_epochs(tmp_path).to_pandas()
    assert epochs["epoch"].tolist() == [1, 2, 3] and set(epochs["trial_id"]) == {config["trial_id"]}
    (row,) = read_trials(tmp_path).to_pylist()
    assert row["status"] == "completed" and row["epochs"] == 3 and row["val_acc"] == pytest.approx(0.7)
    # The row records the run config the plan resolved once, as the trial trained it.
    assert json.loads(row["config_json"]) == config["run"] and row["ast.kp"] == config["ast.kp"]
    assert row["search_phase"] == config["search_phase"] == "startup"  # the random sampler never guides
    # The plan heard of the end after the row was written, and told Optuna the store's numbers.
    (trial,) = plan.study.study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.values == pytest.approx([row["val_acc"], row["energy_j"]])


def test_an_attempt_that_retries_an_error_is_running_again(tmp_path):
    recorder, plan = driver(tmp_path)
    config = plan.next_trial()
    recorder.on_start(config)
    recorder.on_error(config, "RuntimeError: node lost")
    assert read_trials(tmp_path).to_pylist()[0]["status"] == "error"
    recorder, plan = driver(tmp_path)
    again = plan.next_trial()
    assert again["trial_id"] == config["trial_id"]
    recorder.on_start(again)
    row = read_trials(tmp_path).to_pylist()[0]
    assert row["status"] == "running" and row["error"] is None
