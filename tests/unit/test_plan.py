"""Baselines and seed replicates: what a sweep trains, in which order, and what Optuna is told."""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from fractions import Fraction

import optuna
import pytest

from astray.config.load import build_config
from astray.config.sweep import Baseline, budget_epochs, load_sweep_spec
from astray.errors import ConfigError
from astray.schema import DEFAULT_OBJECTIVES
from astray.sweep.plan import ConfirmationPlan, TrialPlan, launch_order, replicate_mean
from astray.sweep.study import SweepStudy
from astray.sweep.trial_config import resolved_trial_run
from tests.conftest import REPO

QUICK = str(REPO / "configs/quickstart.yaml")
METRICS = list(DEFAULT_OBJECTIVES)  # val_acc max, energy_j min
BASELINES = [Baseline("dense", 1.0), Baseline("dense", 0.5), Baseline("random", 0.3)]


SPEC = load_sweep_spec(QUICK, ["search.space={ast.kp: {type: loguniform, low: 0.1, high: 5.0}}", "search.sampler=random"])


def study(tmp_path, name: str = "s") -> SweepStudy:
    """A real Optuna study in a journal file, as a sweep keeps it."""
    return SweepStudy(SPEC.search, name, tmp_path / "journal.log")


def plan_of(tmp_path, baselines=BASELINES, num_samples=2, repeats=2, base_seed=0, records=(), **kw) -> TrialPlan:
    return TrialPlan(baselines, num_samples, repeats, base_seed, METRICS, study(tmp_path), records, **kw)


def hand_out(plan: TrialPlan, n: int) -> list[dict]:
    out = []
    for i in range(n):
        cfg = plan.next_trial()
        assert isinstance(cfg, dict), (i, cfg)
        out.append(cfg)
    return out


def row(cfg: dict, status: str = "completed", val_acc: float = 0.9, energy_j: float = 100.0) -> dict:
    """The store row the recorder writes when a handed-out trial ends."""
    return {"trial_id": cfg["trial_id"], "config_id": cfg["config_id"], "replicate": cfg["replicate"],
            "status": status, "val_acc": val_acc, "energy_j": energy_j}


def journal_tells(tmp_path) -> Counter:
    """How often the journal records each Optuna trial finishing (told)."""
    ops = [json.loads(line) for line in (tmp_path / "journal.log").read_text().splitlines()]
    return Counter(op["trial_id"] for op in ops if op["op_code"] == 6)  # SET_TRIAL_STATE_VALUES


def test_baselines_among_searched_each_repeated_in_a_row_with_consecutive_seeds(tmp_path):
    plan = plan_of(tmp_path, num_samples=2, repeats=3, base_seed=10)
    assert plan.total == 15 and plan.to_train() == 15
    configs = hand_out(plan, 3)
    assert plan.study.study.trials == []  # Optuna is asked when a configuration's first replicate is handed out
    configs += hand_out(plan, 12)
    assert plan.next_trial() is None and plan.to_train() == 0
    ids = [c["config_id"] for c in configs]
    assert ids == (["dense@1"] * 3 + ["search-0000"] * 3 + ["dense@0.5"] * 3 + ["search-0001"] * 3
                   + ["random@0.3"] * 3)
    assert [c["seed"] for c in configs] == [10, 11, 12] * 5
    assert [c["replicate"] for c in configs] == [0, 1, 2] * 5
    # Stable trial ids: the store and Ray's folders know a trial by its configuration and replicate.
    assert [c["trial_id"] for c in configs[:3]] == ["dense@1-r0", "dense@1-r1", "dense@1-r2"]
    assert all(c["resume_from"] is None for c in configs)
    assert [c["baseline_kind"] for c in configs] == ["dense"] * 3 + [""] * 3 + ["dense"] * 3 + [""] * 3 + ["random"] * 3
    # Optuna is asked once per searched configuration, and its values go to every replicate;
    # the journal labels each proposal with its configuration.
    trials = plan.study.study.trials
    assert [t.user_attrs["config_id"] for t in trials] == ["search-0000", "search-0001"]
    assert {c["ast.kp"] for c in configs[3:6]} == {trials[0].params["ast.kp"]}
    assert {c["ast.kp"] for c in configs[9:12]} == {trials[1].params["ast.kp"]}
    assert all("ast.kp" not in c for c in configs if c["baseline_kind"])


def test_baselines_are_spread_among_the_searched_configurations(tmp_path):
    """Trials run side by side (search.max_concurrent): a baseline's neighbours must be
    the same kind of trials a searched one has, not only other baselines."""
    for repeats, expected in ((1, [1, 4, 7]), (2, [2, 3, 8, 9, 14, 15])):
        plan = TrialPlan(BASELINES, 6, repeats, 0, METRICS, study(tmp_path, f"s{repeats}"))
        kinds = [c["baseline_kind"] for c in hand_out(plan, 9 * repeats)]
        assert [i for i, k in enumerate(kinds) if k] == expected


@pytest.mark.parametrize("baselines", range(7))
@pytest.mark.parametrize("searched", range(13))
def test_launch_order_keeps_each_kind_in_order_and_spreads_the_baselines_evenly(baselines, searched):
    order = launch_order(baselines, searched)
    assert [i for b, i in order if b] == list(range(baselines))
    assert [i for b, i in order if not b] == list(range(searched))
    at = [slot for slot, (b, _) in enumerate(order) if b]
    gaps = [b - a - 1 for a, b in zip(at, at[1:])]
    assert max(gaps, default=0) - min(gaps, default=0) <= 1
    if at:  # as many searched before the first baseline as after the last, give or take one
        assert abs(at[0] - (len(order) - 1 - at[-1])) <= 1


def test_optuna_is_told_the_replicate_mean_once_all_replicates_finish_and_never_about_baselines(tmp_path):
    plan = plan_of(tmp_path, baselines=BASELINES[:1], num_samples=1, repeats=3)
    configs = hand_out(plan, 6)  # 3 searched, 3 baseline
    for c in configs[3:]:
        plan.finished(row(c))
    plan.finished(row(configs[1], val_acc=0.8, energy_j=40.0))
    plan.finished(row(configs[0], val_acc=0.6, energy_j=50.0))
    (trial,) = plan.study.study.trials
    assert trial.state == optuna.trial.TrialState.RUNNING
    # One diverged replicate of three counts at the worst finished one's values (0.6, 50 J).
    plan.finished(row(configs[2], status="diverged", val_acc=math.nan, energy_j=30.0))
    (trial,) = plan.study.study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.values == pytest.approx([(0.8 + 0.6 + 0.6) / 3, (40.0 + 50.0 + 50.0) / 3])
    assert plan.missing() == []


def test_a_configuration_whose_replicates_all_failed_is_told_as_failed(tmp_path):
    plan = plan_of(tmp_path, baselines=[], num_samples=1, repeats=2)
    a, b = hand_out(plan, 2)
    plan.finished(row(a, status="error", val_acc=math.nan))
    plan.finished(row(b, val_acc=math.inf, energy_j=1.0))
    assert plan.study.study.trials[0].state == optuna.trial.TrialState.FAIL


def test_a_rebuilt_plan_hands_out_exactly_what_the_store_lacks_under_the_earlier_ids(tmp_path):
    """A driver dies with trials done, running and not yet started; the next one, built
    from the store's rows and the journal, trains the rest and nothing twice."""
    first = plan_of(tmp_path, num_samples=3)
    configs = hand_out(first, 7)  # search-0000, dense@1, search-0001, and dense@0.5's first replicate
    assert [c["config_id"] for c in configs[::2]] == ["search-0000", "dense@1", "search-0001", "dense@0.5"]
    rows = [row(c) for c in configs[:3]]
    rows.append(row(configs[3], status="running"))  # dense@1 r1: its driver died mid-training
    rows.append(row(configs[4], status="error"))  # search-0001 r0: out of retries; --resume retries it
    # search-0001 r1 and dense@0.5 r0 were handed to Ray, which never started them: no rows.
    found = []
    again = TrialPlan(BASELINES, 3, 2, 0, METRICS, study(tmp_path), rows,
                      checkpoint_of=lambda tid: found.append(tid) or f"/ckpt/{tid}")
    assert again.to_train() == 1 + 2 + 2 + 2 + 2  # dense@1 r1, search-0001, dense@0.5, search-0002, random@0.3
    assert len(again.study.study.trials) == 2
    rest = hand_out(again, 9)
    assert again.next_trial() is None
    assert [(c["config_id"], c["replicate"]) for c in rest] == [
        ("dense@1", 1), ("search-0001", 0), ("search-0001", 1), ("dense@0.5", 0), ("dense@0.5", 1),
        ("search-0002", 0), ("search-0002", 1), ("random@0.3", 0), ("random@0.3", 1)]
    # An attempt that continues one the store knows keeps its id, from its last checkpoint.
    assert rest[0]["trial_id"] == "dense@1-r1" and rest[0]["resume_from"] == "/ckpt/dense@1-r1"
    assert found == ["dense@1-r1", "search-0001-r0"] and rest[2]["resume_from"] is None
    # The searched configuration Optuna proposed before the kill is trained as proposed,
    # not proposed again; the next one continues the numbering.
    trials = again.study.study.trials
    assert [t.user_attrs["config_id"] for t in trials] == ["search-0000", "search-0001", "search-0002"]
    assert rest[1]["ast.kp"] == configs[4]["ast.kp"] == trials[1].params["ast.kp"]
    assert rest[5]["ast.kp"] == trials[2].params["ast.kp"]


def test_a_configuration_finished_before_the_tell_is_told_by_the_next_driver_and_only_once(tmp_path):
    first = plan_of(tmp_path, baselines=[], num_samples=1, repeats=2)
    a, b = hand_out(first, 2)
    rows = [row(a, val_acc=0.5), row(b, val_acc=0.7)]  # both rows written; the driver died before the tell
    assert first.study.study.trials[0].state == optuna.trial.TrialState.RUNNING
    again = TrialPlan([], 1, 2, 0, METRICS, study(tmp_path), rows)
    assert again.to_train() == 0 and again.missing() == []
    assert again.study.study.trials[0].values == pytest.approx([0.6, 100.0])
    TrialPlan([], 1, 2, 0, METRICS, study(tmp_path), rows)  # a third driver tells nothing
    assert list(journal_tells(tmp_path).values()) == [1]


def test_a_proposal_the_driver_never_labelled_is_closed_as_failed(tmp_path):
    s = study(tmp_path)
    s.study.ask()  # asked, then the driver died before the configuration id was recorded
    assert study(tmp_path).close_orphans() == 1
    plan = TrialPlan([], 1, 1, 0, METRICS, study(tmp_path))
    assert plan.next_trial()["config_id"] == "search-0000"
    states = [t.state for t in plan.study.study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING]


def test_missing_names_every_planned_trial_without_a_result(tmp_path):
    plan = plan_of(tmp_path, baselines=BASELINES[:1], num_samples=2, repeats=2)
    configs = hand_out(plan, 3)  # search-0000 r0, r1, dense@1 r0
    plan.finished(row(configs[0]))
    plan.finished(row(configs[2], status="error"))  # ran, and failed: not missing
    assert plan.missing() == ["search-0000 r1", "dense@1 r1", "search-0001 r0", "search-0001 r1"]
    line = plan.missing_line("sw")
    assert line.startswith("sweep sw ended with 4 of 6 planned trials missing (search-0000 r1, dense@1 r1, ")
    assert "--resume" in line and "\n" not in line


def test_replicate_mean_counts_failures_at_the_worst_and_fails_past_half():
    assert replicate_mean([None, None], METRICS) is None
    one_of_two = replicate_mean([{"val_acc": 1.0, "energy_j": 2.0}, None], METRICS)
    assert one_of_two == {"val_acc": 1.0, "energy_j": 2.0, "replicates": 1, "failed": 1}
    good = [{"val_acc": 0.9, "energy_j": 10.0}, {"val_acc": 0.7, "energy_j": 30.0}]
    assert replicate_mean([*good, None], METRICS) == pytest.approx(
        {"val_acc": (0.9 + 0.7 + 0.7) / 3, "energy_j": (10.0 + 30.0 + 30.0) / 3, "replicates": 2, "failed": 1})
    assert replicate_mean([good[0], None, None], METRICS) is None  # two of three lost: no value


@pytest.mark.parametrize("epochs, budget, expected", [(6, 1.0, 6), (6, 0.5, 3), (6, 0.33, 2), (5, 0.5, 3),
                                                      (10, 0.01, 1), (3, 0.5, 2), (25, 0.58, 15), (50, 0.29, 15)])
def test_budget_epochs_rounds_half_up_and_trains_at_least_one(epochs, budget, expected):
    assert budget_epochs(epochs, budget) == expected


def test_budget_epochs_rounds_the_exact_share_not_its_float_product():
    """0.58 x 25 is 14.5, so 15 epochs; in floats it is 14.499..., which would round to 14."""
    wrong = [(budget, epochs) for budget in (i / 100 for i in range(1, 100)) for epochs in range(1, 201)
             if budget_epochs(epochs, budget) != max(1, math.floor(Fraction(str(budget)) * epochs + Fraction(1, 2)))]
    assert wrong == []


def test_baselines_short_form_and_default():
    assert load_sweep_spec(QUICK, ["search.baselines=null", "search.baseline=true"]).search.parsed_baselines == \
        (Baseline("dense", 1.0),)
    assert load_sweep_spec(QUICK, ["search.baselines=null", "search.baseline=false"]).search.parsed_baselines == ()
    assert load_sweep_spec(QUICK, ["search.baselines=null"]).search.parsed_baselines == (Baseline("dense", 1.0),)
    spec = load_sweep_spec(QUICK, ["search.baselines={dense_budgets: [1.0, 0.5], random: [0.3, 0.5]}",
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
    (["search.confirm=-1"], "search.confirm"),
    (["search.confirm=2", "search.baselines={dense_budgets: [1.0], random: [0.3]}"], "needs at least 2 dense budgets"),
    (["search.repeats=2", "search.space={training.seed: {type: int, low: 0, high: 9}}"], "training.seed"),
])
def test_bad_baselines_and_repeats_are_one_line_errors(overrides, needle):
    with pytest.raises(ConfigError) as err:
        load_sweep_spec(QUICK, overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_trial_run_config_trains_each_kind_as_its_row_says(tmp_path):
    spec = load_sweep_spec(QUICK, ["search.baselines={dense_budgets: [1.0, 0.5], random: [0.3]}", "training.seed=7"])
    opt = SweepStudy(spec.search, "s", tmp_path / "journal.log")
    plan = TrialPlan(spec.search.parsed_baselines, 1, 2, spec.run.training.seed, METRICS, opt,
                     resolve=functools.partial(resolved_trial_run, spec))
    runs = {(c["config_id"], c["replicate"]): build_config(c["run"]) for c in hand_out(plan, 8)}
    dense = [runs[cid, r] for cid in ("dense@1", "dense@0.5") for r in (0, 1)]
    assert [(r.ast.strategy, r.training.epochs, r.training.seed) for r in dense] == \
        [("dense", 6, 7), ("dense", 6, 8), ("dense", 3, 7), ("dense", 3, 8)]
    assert [(runs["random@0.3", r].ast.strategy, runs["random@0.3", r].ast.target_activation)
            for r in (0, 1)] == [("random", 0.3)] * 2
    # Searched values reach the searched trial only; baselines keep the base config's.
    kp = opt.study.trials[0].params["ast.kp"]
    searched = [runs["search-0000", r] for r in (0, 1)]
    assert [r.ast.kp for r in searched] == [kp, kp] and dense[0].ast.kp == spec.run.ast.kp
    assert [(r.ast.strategy, r.training.epochs, r.training.seed) for r in searched] == [("stale", 6, 7),
                                                                                        ("stale", 6, 8)]


def test_confirmation_trains_fresh_seeds_of_the_picked_configurations_and_tells_optuna_nothing(tmp_path):
    plan = plan_of(tmp_path, num_samples=2, repeats=2, base_seed=10)
    configs = hand_out(plan, plan.to_train())
    for c in configs:
        plan.finished(row(c))
    assert not plan.missing()
    told = journal_tells(tmp_path)
    confirm = ConfirmationPlan(plan, ["search-0001", "dense@0.5", "dense@1"], 2)
    assert confirm.total == plan.total + 6 and confirm.to_train() == 6
    out = hand_out(confirm, 6)
    assert confirm.next_trial() is None
    assert [(c["config_id"], c["replicate"], c["seed"]) for c in out] == [
        ("search-0001", 2, 12), ("search-0001", 3, 13), ("dense@0.5", 2, 12), ("dense@0.5", 3, 13),
        ("dense@1", 2, 12), ("dense@1", 3, 13)]
    # Seeds the search never used (it trained 10 and 11), the searched values as searched.
    assert {c["seed"] for c in configs}.isdisjoint(c["seed"] for c in out)
    assert out[0]["ast.kp"] == next(c for c in configs if c["config_id"] == "search-0001")["ast.kp"]
    assert {c["search_phase"] for c in out} == {"confirmation"}
    assert (out[2]["baseline_kind"], out[2]["baseline_value"]) == ("dense", 0.5)
    for c in out[:3]:
        confirm.finished(row(c))
    assert journal_tells(tmp_path) == told  # Optuna is never told a confirmation trial
    assert confirm.missing() == ["dense@0.5 r3", "dense@1 r2", "dense@1 r3"]
    # A driver rebuilt from the store trains only what is missing, under the same ids.
    rows = [row(c) for c in configs] + [row(c) for c in out[:3]]
    again = ConfirmationPlan(TrialPlan(BASELINES, 2, 2, 10, METRICS, study(tmp_path), rows),
                             ["search-0001", "dense@0.5", "dense@1"], 2)
    assert [c["trial_id"] for c in hand_out(again, again.to_train())] == ["dense@0.5-r3", "dense@1-r2", "dense@1-r3"]
