"""Baselines and seed replicates: what a sweep trains, in which order, and what Optuna is told."""

from __future__ import annotations

import math
import pickle

import optuna
import pytest

from astray.config.load import build_config
from astray.config.sweep import Baseline, budget_epochs, load_sweep
from astray.errors import ConfigError
from astray.sweep.plan import TrialPlan, replicate_mean
from astray.sweep.trial_config import trial_run_config
from tests.conftest import REPO

QUICK = str(REPO / "configs/quickstart.yaml")
METRICS = ["val_acc", "energy_j"]
BASELINES = [Baseline("dense", 1.0), Baseline("dense", 0.5), Baseline("random", 0.3)]


class Study:
    """A real in-memory Optuna study behind the plan's ask/tell (the searcher's role)."""

    def __init__(self) -> None:
        self.study = optuna.create_study(directions=["maximize", "minimize"],
                                         sampler=optuna.samplers.RandomSampler(seed=0))
        self.trials: dict[str, optuna.Trial] = {}
        self.asked: list[str] = []
        self.told: list[tuple[str, dict | None, bool]] = []

    def ask(self, trial_id: str) -> dict:
        self.asked.append(trial_id)
        t = self.trials[trial_id] = self.study.ask()
        return {"ast.kp": t.suggest_float("ast.kp", 0.1, 5.0)}

    def tell(self, trial_id: str, result: dict | None, error: bool) -> None:
        self.told.append((trial_id, result, error))
        if error:
            self.study.tell(self.trials[trial_id], state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(self.trials[trial_id], [result[m] for m in METRICS])


def hand_out(plan: TrialPlan, opt: Study, n: int) -> list[dict]:
    out = []
    for i in range(n):
        cfg = plan.suggest(f"t{len(plan.trials)}", opt.ask)
        assert isinstance(cfg, dict), (i, cfg)
        out.append(cfg)
    return out


def test_baselines_first_then_searched_each_repeated_with_consecutive_seeds():
    plan, opt = TrialPlan(BASELINES, num_samples=2, repeats=3, base_seed=10, metrics=METRICS), Study()
    assert plan.total == 15
    configs = hand_out(plan, opt, 15)
    assert plan.suggest("t-extra", opt.ask) == "FINISHED"
    ids = [c["config_id"] for c in configs]
    assert ids == (["dense@1"] * 3 + ["dense@0.5"] * 3 + ["random@0.3"] * 3
                   + ["search-0000"] * 3 + ["search-0001"] * 3)
    assert [c["seed"] for c in configs] == [10, 11, 12] * 5
    assert [c["replicate"] for c in configs] == [0, 1, 2] * 5
    assert [c["baseline_kind"] for c in configs[:9]] == ["dense"] * 6 + ["random"] * 3
    assert all(c["baseline_kind"] == "" for c in configs[9:])
    # Optuna is asked once per searched configuration, and its values go to every replicate.
    assert opt.asked == ["t9", "t12"]
    kp = [t.params["ast.kp"] for t in opt.study.trials]
    assert {c["ast.kp"] for c in configs[9:12]} == {kp[0]} and {c["ast.kp"] for c in configs[12:]} == {kp[1]}
    assert all("ast.kp" not in c for c in configs[:9])


def test_optuna_is_told_the_replicate_mean_once_all_replicates_finish_and_never_about_baselines():
    plan, opt = TrialPlan(BASELINES[:1], num_samples=1, repeats=3, base_seed=0, metrics=METRICS), Study()
    hand_out(plan, opt, 6)  # t0..t2 baseline, t3..t5 searched
    for tid in ("t0", "t1", "t2"):
        plan.complete(tid, {"val_acc": 0.9, "energy_j": 100.0}, False, opt.tell)
    assert opt.told == []
    plan.complete("t4", {"val_acc": 0.8, "energy_j": 40.0}, False, opt.tell)
    plan.complete("t3", {"val_acc": 0.6, "energy_j": 50.0}, False, opt.tell)
    assert opt.told == []
    # A diverged replicate (NaN objectives) is recorded but left out of the mean.
    plan.complete("t5", {"val_acc": math.nan, "energy_j": 30.0}, False, opt.tell)
    (owner, mean, error), = opt.told
    assert owner == "t3" and not error
    assert mean["val_acc"] == pytest.approx(0.7) and mean["energy_j"] == pytest.approx(45.0)
    assert mean["replicates"] == 2
    (trial,) = opt.study.trials
    assert trial.values == pytest.approx([0.7, 45.0])


def test_a_configuration_whose_replicates_all_failed_is_told_as_an_error():
    plan, opt = TrialPlan([], num_samples=1, repeats=2, base_seed=0, metrics=METRICS), Study()
    hand_out(plan, opt, 2)
    plan.complete("t0", None, True, opt.tell)
    plan.complete("t1", {"val_acc": math.inf, "energy_j": 1.0}, False, opt.tell)
    assert opt.told == [("t0", None, True)]
    assert opt.study.trials[0].state == optuna.trial.TrialState.FAIL


def test_the_plan_survives_pickling_mid_sweep():
    plan, opt = TrialPlan(BASELINES[:1], num_samples=2, repeats=2, base_seed=0, metrics=METRICS), Study()
    hand_out(plan, opt, 3)
    plan.complete("t2", {"val_acc": 0.5, "energy_j": 5.0}, False, opt.tell)
    again = pickle.loads(pickle.dumps(plan))
    rest = hand_out(again, opt, 3)
    assert [c["config_id"] for c in rest] == ["search-0000", "search-0001", "search-0001"]
    again.complete("t3", {"val_acc": 0.7, "energy_j": 7.0}, False, opt.tell)
    assert opt.told[-1][0] == "t2" and opt.told[-1][1]["val_acc"] == pytest.approx(0.6)


def test_optuna_with_nothing_to_propose_yet_hands_out_nothing():
    plan = TrialPlan([], num_samples=1, repeats=1, base_seed=0, metrics=METRICS)
    assert plan.suggest("t0", lambda tid: None) is None
    assert plan.suggest("t0", lambda tid: {"ast.kp": 1.0})["config_id"] == "search-0000"


def test_replicate_mean_skips_failures():
    assert replicate_mean([None, None], METRICS) is None
    assert replicate_mean([{"val_acc": 1.0, "energy_j": 2.0}, None], METRICS)["replicates"] == 1


@pytest.mark.parametrize("epochs, budget, expected", [(6, 1.0, 6), (6, 0.5, 3), (6, 0.33, 2), (5, 0.5, 3),
                                                      (10, 0.01, 1), (3, 0.5, 2)])
def test_budget_epochs_rounds_half_up_and_trains_at_least_one(epochs, budget, expected):
    assert budget_epochs(epochs, budget) == expected


def test_baselines_short_form_and_default():
    assert load_sweep(QUICK, ["search.baselines=null", "search.baseline=true"]).search.parsed_baselines == \
        (Baseline("dense", 1.0),)
    assert load_sweep(QUICK, ["search.baselines=null", "search.baseline=false"]).search.parsed_baselines == ()
    assert load_sweep(QUICK, ["search.baselines=null"]).search.parsed_baselines == (Baseline("dense", 1.0),)
    spec = load_sweep(QUICK, ["search.baselines={dense_budgets: [1.0, 0.5], random: [0.3, 0.5]}",
                              "search.repeats=3", "search.num_samples=4"])
    assert [b.config_id for b in spec.search.parsed_baselines] == ["dense@1", "dense@0.5", "random@0.3",
                                                                  "random@0.5"]
    assert spec.search.trials_per_sweep == (4 + 4) * 3


@pytest.mark.parametrize("overrides, needle", [
    (["search.baseline=true"], "search.baseline and search.baselines"),
    (["search.baselines={dense_budgets: [1.0, 0]}"], "search.baselines.dense_budgets[1]"),
    (["search.baselines={dense_budgets: [1.5]}"], "search.baselines.dense_budgets[0]"),
    (["search.baselines={random: [0.3, 0.3]}"], "twice"),
    (["search.baselines={random: fast}"], "search.baselines.random"),
    (["search.baselines={dense: [1.0]}"], "search.baselines.dense"),
    (["search.baselines={dense_budgets: [0.5, 0.45]}"], "both train 3 of training.epochs=6"),
    (["search.repeats=0"], "search.repeats"),
    (["search.repeats=2", "search.space={training.seed: {type: int, low: 0, high: 9}}"], "training.seed"),
])
def test_bad_baselines_and_repeats_are_one_line_errors(overrides, needle):
    with pytest.raises(ConfigError) as err:
        load_sweep(QUICK, overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_trial_run_config_trains_each_kind_as_its_row_says():
    spec = load_sweep(QUICK, ["search.baselines={dense_budgets: [1.0, 0.5], random: [0.3]}", "training.seed=7"])
    plan, opt = TrialPlan(spec.search.parsed_baselines, 1, 2, spec.run.training.seed, METRICS), Study()
    runs = [build_config(trial_run_config(spec, c)) for c in hand_out(plan, opt, 8)]
    assert [(r.ast.strategy, r.training.epochs, r.training.seed) for r in runs[:4]] == \
        [("dense", 6, 7), ("dense", 6, 8), ("dense", 3, 7), ("dense", 3, 8)]
    assert [(r.ast.strategy, r.ast.target_activation) for r in runs[4:6]] == [("random", 0.3)] * 2
    # Searched values reach the searched trial only; baselines keep the base config's.
    kp = opt.study.trials[0].params["ast.kp"]
    assert [r.ast.kp for r in runs[6:]] == [kp, kp] and runs[0].ast.kp == spec.run.ast.kp
    assert [(r.ast.strategy, r.training.epochs, r.training.seed) for r in runs[6:]] == [("stale", 6, 7),
                                                                                       ("stale", 6, 8)]
