"""A search that is what it says: the sampler's options, a start-up phase that leaves a guided
one, each searched configuration's phase on record, and what Optuna is told about replicates
that diverged."""

from __future__ import annotations

import math

import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astray.config.sweep import legacy_sampler, load_sweep_spec
from astray.errors import ConfigError
from astray.schema import DEFAULT_OBJECTIVES, PHASE_GUIDED, PHASE_STARTUP
from astray.sweep.plan import TrialPlan
from astray.sweep.runner import resumed_sampler, sampler_words
from astray.sweep.store import TRIAL_COLUMNS, ResultStore, read_trials
from astray.sweep.study import SweepStudy
from tests.conftest import REPO

QUICK = str(REPO / "configs/quickstart.yaml")
KP = "search.space={ast.kp: {type: loguniform, low: 0.1, high: 5.0}}"
SHIPPED = ["quickstart", "fashion", "cifar10", "imagenet"]


def spec_of(*overrides: str):
    return load_sweep_spec(QUICK, [KP, "search.baselines={}", *overrides])


def one_line_error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        spec_of(*overrides)
    assert "\n" not in str(err.value)
    return str(err.value)


# ----------------------------------------------------------------- options


def test_the_default_tpe_start_up_is_a_third_of_the_sweep_not_optunas_ten():
    for n, start in ((8, 2), (3, 2), (1, 2), (16, 5), (24, 8)):
        sampler = spec_of(f"search.num_samples={n}").search.parsed_sampler
        assert sampler.options == {"multivariate": True, "n_startup_trials": start}
        assert sampler.defaults == ("multivariate", "n_startup_trials") and sampler.startup_trials == start
        assert sampler.build()._n_startup_trials == start


def test_sampler_options_reach_the_optuna_constructor():
    sampler = spec_of("search.sampler_options={n_startup_trials: 3, constant_liar: false}").search.parsed_sampler
    assert sampler.options == {"multivariate": True, "n_startup_trials": 3, "constant_liar": False}
    built = sampler.build()
    assert isinstance(built, optuna.samplers.TPESampler) and built._n_startup_trials == 3 and not built._constant_liar
    nsga = spec_of("search.sampler=nsga2", "search.sampler_options={population_size: 4}").search.parsed_sampler
    assert nsga.build().population_size == 4 and nsga.startup_trials == 4
    assert spec_of("search.sampler=nsga2").search.parsed_sampler.options == {"population_size": 50}
    assert spec_of("search.sampler=random").search.parsed_sampler.startup_trials is None


@pytest.mark.parametrize("overrides, needles", [
    (["search.sampler_options={n_startup_trial: 3}"],
     ["search.sampler_options.n_startup_trial", "allowed:", "n_startup_trials", "constant_liar", "multivariate"]),
    (["search.sampler_options={gamma: 3}"], ["search.sampler_options.gamma", "TPESampler"]),  # a callable
    (["search.sampler_options={seed: 3}"], ["search.sampler_options.seed", "search.seed"]),
    (["search.sampler=random", "search.sampler_options={n_startup_trials: 3}"],
     ["search.sampler_options.n_startup_trials", "RandomSampler", "none besides seed"]),
    (["search.sampler=nsga2", "search.sampler_options={n_startup_trials: 3}"],
     ["search.sampler_options.n_startup_trials", "population_size"]),
    (["search.sampler_options={n_startup_trials: three}"], ["search.sampler_options.n_startup_trials", "int"]),
    (["search.sampler_options={n_startup_trials: -1}"], ["search.sampler_options.n_startup_trials"]),
    (["search.sampler_options=[n_startup_trials]"], ["search.sampler_options", "mapping"]),
    (["search.sampler=nsga2", "search.sampler_options={population_size: 1}"], ["NSGAIISampler", "population_size"]),
])
def test_bad_sampler_options_are_one_line_errors(overrides, needles):
    message = one_line_error(*overrides)
    assert all(n in message for n in needles), message


def test_a_chosen_start_up_that_leaves_no_guided_configuration_is_refused():
    # 8 configurations, 2 at a time: the first guided one can come after 6 told (1 still running).
    assert spec_of("search.sampler_options={n_startup_trials: 6}").search.parsed_sampler.startup_trials == 6
    message = one_line_error("search.sampler_options={n_startup_trials: 7}")
    assert "search.sampler_options.n_startup_trials=7" in message and "search.num_samples=8" in message
    assert "n_startup_trials to at most 6" in message and "search.num_samples to at least 9" in message
    assert "search.max_concurrent=2" in message
    spec_of("search.sampler_options={n_startup_trials: 7}", "search.max_concurrent=1")
    assert "population_size=8" in one_line_error("search.sampler=nsga2", "search.sampler_options={population_size: 8}")
    # astray's own default is never refused: a sweep of 2 is a random search, and says so.
    assert spec_of("search.num_samples=2").search.parsed_sampler.phase(0) == PHASE_STARTUP


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_tpe_config_leaves_a_guided_phase(tmp_path, name):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    data = {"fashion": [f"dataset.root={tmp_path}"], "quickstart": []}.get(
        name, [f"dataset.train_dir={tmp_path / 'train'}", f"dataset.val_dir={tmp_path / 'val'}"])
    search = load_sweep_spec(str(REPO / f"configs/{name}.yaml"), data).search
    assert search.sampler == "tpe"
    start = search.parsed_sampler.startup_trials
    assert 2 <= start <= search.num_samples - search.max_concurrent
    assert search.num_samples - start - (search.max_concurrent - 1) >= search.num_samples // 2  # mostly guided


# ----------------------------------------------------------------- the record


def plan_of(tmp_path, spec, repeats: int = 1) -> TrialPlan:
    study = SweepStudy(spec.search, "s", tmp_path / "journal.log")
    return TrialPlan((), spec.search.num_samples, repeats, 0, spec.search.parsed_objectives, study)


def finish(plan: TrialPlan, config: dict, val_acc: float, energy_j: float, status: str = "completed") -> None:
    plan.finished({"trial_id": config["trial_id"], "config_id": config["config_id"],
                   "replicate": config["replicate"], "status": status, "val_acc": val_acc, "energy_j": energy_j})


def test_each_searched_configuration_records_whether_the_sampler_guided_it(tmp_path):
    spec = spec_of("search.num_samples=5", "search.sampler_options={n_startup_trials: 2}")
    plan = plan_of(tmp_path, spec)
    c0 = plan.next_trial()
    finish(plan, c0, 0.5, 100.0)
    c1, c2 = plan.next_trial(), plan.next_trial()  # c1 still runs when c2 is asked: one told, not two
    finish(plan, c1, 0.6, 90.0)
    finish(plan, c2, 0.7, 80.0)
    c3 = plan.next_trial()
    finish(plan, c3, 0.8, 70.0)
    phases = [c["search_phase"] for c in (c0, c1, c2, c3, plan.next_trial())]
    assert phases == [PHASE_STARTUP, PHASE_STARTUP, PHASE_STARTUP, PHASE_GUIDED, PHASE_GUIDED]
    trials = plan.study.study.trials
    assert [t.user_attrs["search_phase"] for t in trials] == phases
    # The record is Optuna's own behaviour: TPE keeps what it sampled from its model ("relative").
    modelled = [any(k.startswith("tpe:relative_params") for k in t.system_attrs) for t in trials]
    assert modelled == [p == PHASE_GUIDED for p in phases]
    # A resumed driver reads the phases back from the journal.
    again = SweepStudy(spec.search, "s", tmp_path / "journal.log")
    assert [p.phase for p in again.proposals()] == phases


def test_failed_configurations_do_not_end_the_start_up_phase(tmp_path):
    spec = spec_of("search.num_samples=4", "search.sampler_options={n_startup_trials: 1}", "search.max_concurrent=1")
    plan = plan_of(tmp_path, spec)
    first = plan.next_trial()
    finish(plan, first, math.nan, 10.0, status="diverged")  # told FAIL: TPE learns nothing from it
    second = plan.next_trial()
    finish(plan, second, 0.8, 10.0)
    assert [first["search_phase"], second["search_phase"], plan.next_trial()["search_phase"]] == [
        PHASE_STARTUP, PHASE_STARTUP, PHASE_GUIDED]


def test_the_trials_table_gains_search_phase_and_old_stores_still_read(tmp_path):
    assert ("search_phase", pa.string()) in TRIAL_COLUMNS
    old = pa.schema([(n, t) for n, t in TRIAL_COLUMNS if n != "search_phase"])
    (tmp_path / "trials").mkdir()
    pq.write_table(pa.Table.from_pylist([{"trial_id": "old", "status": "completed"}], schema=old),
                   tmp_path / "trials" / "old.parquet")
    ResultStore(tmp_path, {}).open().write_trial({"trial_id": "new", "status": "completed", "search_phase": "guided"})
    rows = {r["trial_id"]: r for r in read_trials(tmp_path).to_pylist()}
    assert rows["old"]["search_phase"] is None and rows["new"]["search_phase"] == "guided"


def test_the_manifest_records_the_sampler_and_a_resume_keeps_the_one_a_sweep_started_with():
    search = spec_of().search
    entry = search.parsed_sampler.manifest()
    assert entry == {"name": "tpe", "optuna_class": "optuna.samplers.TPESampler", "seed": 0,
                     "options": {"multivariate": True, "n_startup_trials": 2},
                     "astray_defaults": ["multivariate", "n_startup_trials"], "startup_trials": 2}
    spec = spec_of()
    assert resumed_sampler({"sampler": entry}, spec) == search.parsed_sampler
    # A sweep recorded before sampler options ran with Optuna's 10 start-up trials, and goes on with them.
    assert resumed_sampler({}, spec) == legacy_sampler("tpe", 0)
    assert legacy_sampler("tpe", 0).build()._n_startup_trials == 10
    assert sampler_words(search.parsed_sampler) == "sampler tpe (random until 2 configurations are told, then guided)"


# ----------------------------------------------------------------- diverged replicates


def test_a_configuration_most_of_whose_replicates_diverged_is_told_failed(tmp_path):
    """Two of three diverged: the old rule told Optuna the lone survivor's value, as if the
    configuration were as good as its luckiest seed."""
    plan = plan_of(tmp_path, spec_of("search.num_samples=1"), repeats=3)
    a, b, c = (plan.next_trial() for _ in range(3))
    finish(plan, a, 0.95, 10.0)
    finish(plan, b, math.nan, 5.0, status="diverged")
    finish(plan, c, math.nan, math.nan, status="error")
    (trial,) = plan.study.study.trials
    assert trial.state == optuna.trial.TrialState.FAIL and trial.values is None


def test_a_diverged_replicate_counts_at_the_worst_finished_value(tmp_path):
    plan = plan_of(tmp_path, spec_of("search.num_samples=1"), repeats=3)
    a, b, c = (plan.next_trial() for _ in range(3))
    finish(plan, a, 0.9, 10.0)
    finish(plan, b, math.nan, 1.0, status="diverged")  # its own (cheap) energy is not counted
    finish(plan, c, 0.6, 30.0)
    (trial,) = plan.study.study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert [o.metric for o in DEFAULT_OBJECTIVES] == ["val_acc", "energy_j"]
    assert trial.values == pytest.approx([(0.9 + 0.6 + 0.6) / 3, (10.0 + 30.0 + 30.0) / 3])
    assert trial.values != pytest.approx([0.75, 20.0])  # the survivors' mean, the old rule
