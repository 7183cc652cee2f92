"""Early stopping's rules without Ray: rungs, the non-dominated ranking at a rung, its
decisions kept on disk, the plan handing out nothing of a stopped configuration and
telling Optuna PRUNED, and what the sweep's cost says stopping saved."""

from __future__ import annotations

import json

import optuna
import pytest

from astray.config.sweep import EarlyStopConfig, load_sweep_spec
from astray.errors import ConfigError
from astray.sweep.cost import sweep_cost
from astray.sweep.early_stop import CONTINUE, FILE, STOP, EarlyStopping, keeps, pareto_ranks, rung_values
from tests.unit.test_plan import QUICK, hand_out, plan_of, row


@pytest.mark.parametrize("eta, first, epochs, rungs", [
    (3, 1, 10, [1, 3, 9]), (3, 1, 9, [1, 3]), (2, 2, 20, [2, 4, 8, 16]), (3, 5, 5, []), (1.5, 1, 6, [1, 2, 3, 5])])
def test_rungs_are_geometric_and_below_the_last_epoch(eta, first, epochs, rungs):
    assert EarlyStopConfig(True, eta, first).rungs(epochs) == rungs


def test_bad_early_stop_keys_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"sweep.early_stop.reduction_factor=1.0 is out of range"):
        load_sweep_spec(QUICK, ["sweep.early_stop.reduction_factor=1.0"])
    with pytest.raises(ConfigError, match=r"sweep.early_stop.min_epochs=5 leaves no rung below training.epochs=5"):
        load_sweep_spec(QUICK, ["sweep.early_stop.enabled=true", "sweep.early_stop.min_epochs=5",
                                "training.epochs=5"])
    with pytest.raises(ConfigError, match="unknown config key 'sweep.early_stop.eta'"):
        load_sweep_spec(QUICK, ["sweep.early_stop.eta=3"])


def test_pareto_ranks_peel_fronts():
    # (accuracy up, energy down): a and b are the front, c is behind b, d behind everything.
    pts = [(0.9, 10.0), (0.8, 5.0), (0.7, 6.0), (0.6, 20.0)]
    assert pareto_ranks(pts, [True, False]) == [0, 0, 1, 2]


def test_rung_values_use_the_energy_so_far_not_the_epochs_own():
    rows = [{"epoch": e, "val_acc": 0.5 + e / 10, "energy_j": 10.0 * e} for e in (1, 2, 3)]
    # An epoch's report: its row, and the trial's summary so far (energy of epochs 1-3 = 60 J).
    plain = {"epoch_row": json.dumps(rows[2]), "energy_j": 60.0}
    assert rung_values(plain, [1, 3]) == {3: (0.8, 60.0)}
    assert rung_values({"epoch_row": json.dumps(rows[1]), "energy_j": 30.0}, [1, 3]) == {}
    # A resumed attempt's first report also carries the restored rows: each rung gets its own sum.
    resumed = {"epoch_row": json.dumps(rows[2]), "epoch_rows": json.dumps(rows[:2]), "energy_j": 60.0}
    assert rung_values(resumed, [1, 3]) == {1: (0.6, 10.0), 3: (0.8, 60.0)}


def test_a_rung_keeps_the_top_third_by_rank_with_ties_at_the_cut():
    means = {"a": (0.9, 10.0), "b": (0.8, 5.0), "c": (0.7, 6.0), "d": (0.6, 20.0),
             "e": (0.5, 30.0), "f": (0.4, 40.0)}
    # ceil(6/3) = 2 kept: a and b (the front); c, one front behind, and the rest stop.
    assert [k for k in means if keeps(k, means, 3)] == ["a", "b"]
    # Three on the front with a cut of 2: the whole front stays.
    tie = {"a": (0.9, 10.0), "b": (0.8, 5.0), "g": (0.95, 12.0), "d": (0.6, 20.0)}
    assert [k for k in tie if keeps(k, tie, 3)] == ["a", "b", "g"]
    assert keeps("alone", {"alone": (0.1, 99.0)}, 3)  # the first at a rung has none to lose to


def test_decisions_use_replicate_means_and_survive_a_new_driver(tmp_path):
    es = EarlyStopping(tmp_path, [1, 3], 3)
    # Replicate means: good (0.9, 10), bad (0.5, 20): bad is dominated, 2 configs, keep ceil(2/3) = 1.
    es.record("good", 0, 1, 0.95, 9.0)
    es.record("good", 1, 1, 0.85, 11.0)
    assert es.decide("good", 1) == CONTINUE
    es.record("bad", 0, 1, 0.6, 19.0)
    es.record("bad", 1, 1, 0.4, 21.0)
    es.record("bad", 1, 1, 0.99, 1.0)  # a replicate reporting the rung again keeps its first values
    assert es.decide("bad", 1) == STOP
    again = EarlyStopping(tmp_path, [1, 3], 3)
    assert again.stopped_at("bad") == 1 and not again.stopped("good")
    assert again.reports["bad"][1][1] == {"val_acc": 0.4, "energy_j": 21.0}
    # A decision taken is final, whatever arrives later.
    again.record("best", 0, 1, 0.99, 1.0)
    assert again.decide("good", 1) == CONTINUE and again.decide("bad", 1) == STOP
    assert json.loads((tmp_path / FILE).read_text())["decisions"] == {"good": {"1": CONTINUE}, "bad": {"1": STOP}}


def test_a_configuration_with_no_finite_value_at_the_rung_stops(tmp_path):
    es = EarlyStopping(tmp_path, [1], 3)
    es.record("nan", 0, 1, float("nan"), 5.0)
    assert es.decide("nan", 1) == STOP


def test_the_plan_hands_out_nothing_of_a_stopped_configuration_and_tells_optuna_pruned(tmp_path):
    es = EarlyStopping(tmp_path, [1], 3)
    plan = plan_of(tmp_path, baselines=[], num_samples=2, repeats=3, early=es)
    r0, r1 = hand_out(plan, 2)  # search-0000 r0, r1; r2 still queued
    assert {r0["config_id"], r1["config_id"]} == {"search-0000"}
    es.record("search-0000", 0, 1, 0.1, 9.0)
    es.decisions["search-0000"] = {1: STOP}
    plan.finished(row(r0) | {"stopped_early": True})
    states = {t.user_attrs["config_id"]: t.state for t in plan.study.study.trials}
    assert states["search-0000"] == optuna.trial.TrialState.RUNNING  # r1 is still training
    plan.finished(row(r1) | {"stopped_early": True})
    states = {t.user_attrs["config_id"]: t.state for t in plan.study.study.trials}
    assert states["search-0000"] == optuna.trial.TrialState.PRUNED
    nxt = plan.next_trial()
    assert nxt["config_id"] == "search-0001"  # search-0000 r2 is never trained
    assert "search-0000 r2" not in plan.missing()
    assert plan.planned() == plan.total - 1  # the progress line counts to what will train


def test_a_rebuilt_plan_keeps_the_stop_and_records_the_killed_attempts_as_stopped(tmp_path):
    es = EarlyStopping(tmp_path, [1], 3)
    es.record("search-0000", 0, 1, 0.1, 9.0)
    es.decide("search-0000", 1)  # alone at the rung: kept
    es.decisions["search-0000"][1] = STOP  # as a rung with more configurations would have it
    es.save()
    first = plan_of(tmp_path, baselines=[], num_samples=1, repeats=2)
    r0, r1 = hand_out(first, 2)
    # The driver died: r0's row still says running, r1 never wrote one.
    records = [row(r0, status="running")]
    plan = plan_of(tmp_path, baselines=[], num_samples=1, repeats=2, records=records,
                   early=EarlyStopping(tmp_path, [1], 3))
    assert plan.to_train() == 0 and plan.missing() == []
    assert plan.stopped_unfinished == [r0["trial_id"]]


def _row(cid, kind="", epochs=4, planned=4, energy=40.0, stopped=False, rep=0, phase=None):
    return {"trial_id": f"{cid}-r{rep}", "config_id": cid, "replicate": rep, "is_baseline": bool(kind),
            "baseline_kind": kind, "epochs": epochs, "energy_j": energy, "val_energy_j": energy / 10,
            "stopped_early": stopped, "search_phase": phase, "energy_source": "model",
            "config_json": json.dumps({"training": {"epochs": planned}}), "started_at": 100.0 + rep,
            "ended_at": 200.0 + epochs}


def test_sweep_cost_by_kind_and_the_estimated_saving_of_stopping():
    rows = [_row("dense@1", kind="dense"), _row("search-0000"),
            _row("search-0001", epochs=1, energy=10.0, stopped=True)]  # 1 of 4 epochs; r1 never started
    cost = sweep_cost(rows, repeats=2)
    assert cost["by_kind"]["baselines"] == {"trials": 1, "epochs": 4, "energy_j": 40.0, "val_energy_j": 4.0}
    assert cost["by_kind"]["stopped early"]["trials"] == 1
    # 3 epochs not run at 11 J each, and the never-started replicate's 4 epochs at its sibling's 11 J.
    assert cost["early_stop_epochs_not_run"] == 7
    assert cost["early_stop_saved_j"] == pytest.approx(7 * 11.0)
    assert cost["total_energy_j"] == pytest.approx(44 + 44 + 11)
    assert cost["wall_s"] == pytest.approx(204 - 100)
    assert "estimate" in cost["early_stop_saving_rule"] and cost["energy_source"] == "model"
