"""Replicates, baselines and the dense frontier (docs/design.md §9), checked by hand.

Quantiles of Student's t are the tabulated ones (df 1: 12.7062, df 2: 4.3027, df 4:
2.7764), so a wrong degree of freedom or a normal quantile in the code shows.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astray.analysis.compute import analyze, confirmation_pick, not_separable_from
from astray.analysis.frontier import (
    advantage,
    estimate,
    frontier_accuracy_at,
    frontier_energy_at,
    upper_envelope,
)
from astray.analysis.document import separability
from astray.analysis.labels import headline_text
from astray.analysis.results import Estimate, FrontierPoint, Run
from astray.analysis.read import read_sweep, sweep_from_rows
from astray.cli.report import main
from astray.sweep.store import TRIAL_COLUMNS
from tests.unit.test_analysis import ACC_ENERGY, trial_row
from tests.unit.test_report import SEARCHED, build_store, check_outputs

T95 = {1: 12.7062, 2: 4.3027, 4: 2.7764}
NEW_COLUMNS = ("baseline_kind", "budget", "config_id", "replicate", "seed")


def replicates(config_id: str, kind: str, budget: float, accs: list[float], energies: list[float],
               **extra) -> list[dict]:
    """One configuration's seed replicates as trials-table rows, with the new columns."""
    return [trial_row(f"{config_id}-r{r}", acc, energy, is_baseline=kind != "", baseline_kind=kind, budget=budget,
                      config_id=config_id, replicate=r, seed=100 + r, **extra)
            for r, (acc, energy) in enumerate(zip(accs, energies))]


def ordered(rows: list[dict]) -> list[dict]:
    return [dict(r, ended_at=float(i + 1)) for i, r in enumerate(rows)]


def point(energy: float, accuracy: float, name: str = "", n: int = 1, acc_se: float = math.nan) -> FrontierPoint:
    std = acc_se * math.sqrt(n) if n >= 2 else math.nan
    return FrontierPoint(Estimate(energy, math.nan, n, math.nan), Estimate(accuracy, std, n, math.nan), name)


# ----------------------------------------------------------------- statistics


@pytest.mark.parametrize("values, mean, std, df", [
    ([1.0, 3.0], 2.0, math.sqrt(2.0), 1),
    ([1.0, 2.0, 3.0], 2.0, 1.0, 2),
    ([1.0, 2.0, 3.0, 4.0, 5.0], 3.0, math.sqrt(2.5), 4),
])
def test_ci_half_width_uses_student_t_with_n_minus_one_degrees(values, mean, std, df):
    e = estimate(values)
    n = len(values)
    assert e.n == n and e.mean == pytest.approx(mean) and e.std == pytest.approx(std)
    assert e.ci95 == pytest.approx(T95[df] * std / math.sqrt(n), rel=1e-4)


def test_one_value_has_no_interval_and_nan_values_do_not_count():
    one = estimate([0.9, math.nan])
    assert one.n == 1 and one.mean == 0.9 and math.isnan(one.std) and math.isnan(one.ci95)
    assert estimate([]).n == 0 and math.isnan(estimate([]).mean)


def test_configuration_statistics_read_from_a_store(tmp_path):
    rows = ordered(replicates("search-0000", "", 1.0, [0.80, 0.82, 0.84], [10.0, 20.0, 30.0])
                   + [trial_row("search-0000-r3", None, None, status="error", error="OOM",
                                config_id="search-0000", replicate=3)])
    sweep = read_sweep(build_store(tmp_path / "s", rows))
    (c,) = analyze([sweep], ACC_ENERGY).sweeps[0].configurations
    assert (c.config_id, c.n_good, c.n_total) == ("search-0000", 3, 4)
    assert c.stats["val_acc"].ci95 == pytest.approx(T95[2] * 0.02 / math.sqrt(3), rel=1e-4)
    assert c.stats["energy_j"].ci95 == pytest.approx(T95[2] * 10.0 / math.sqrt(3), rel=1e-4)
    assert [t.seed for t in c.replicates[:3]] == [100, 101, 102]


# ----------------------------------------------------------------- the envelope


def test_upper_envelope_drops_a_dearer_budget_that_is_less_accurate():
    pts = [point(100.0, 0.90, "x1"), point(70.0, 0.78, "x0.7"), point(33.0, 0.70, "x0.33"),
           point(50.0, 0.80, "x0.5"), point(50.0, 0.79, "x0.5-worse")]
    env = upper_envelope(pts)
    assert [p.config_id for p in env] == ["x0.33", "x0.5", "x1"]
    # Between 50 J and 100 J the line joins 0.80 and 0.90; the 0.78 point is not on it.
    assert frontier_accuracy_at(env, 60.0) == pytest.approx(0.82)
    assert frontier_accuracy_at(env, 50.0) == pytest.approx(0.80)
    assert frontier_energy_at(env, 0.85) == pytest.approx(75.0)
    assert frontier_energy_at(env, 0.75) == pytest.approx(33.0 + 0.5 * 17.0)
    assert frontier_energy_at(env, 0.90) == pytest.approx(100.0)


@pytest.mark.parametrize("energy", [20.0, 32.999, 100.001, 150.0, math.nan])
def test_no_accuracy_is_read_off_the_frontier_outside_its_energy_range(energy):
    env = upper_envelope([point(33.0, 0.70), point(100.0, 0.90)])
    assert math.isnan(frontier_accuracy_at(env, energy))


@pytest.mark.parametrize("accuracy", [0.5, 0.6999, 0.9001, 1.0])
def test_no_energy_is_read_off_the_frontier_outside_its_accuracy_range(accuracy):
    env = upper_envelope([point(33.0, 0.70), point(100.0, 0.90)])
    assert math.isnan(frontier_energy_at(env, accuracy))


# ----------------------------------------------------------------- the advantage


def runs(*pairs: tuple[float, float], seed0: int = 100) -> tuple[Run, ...]:
    """(energy, accuracy) per seed, seeds 100, 101, ..."""
    return tuple(Run(seed0 + r, r, e, acc) for r, (e, acc) in enumerate(pairs))


def dense_point(name: str, rs: tuple[Run, ...]) -> FrontierPoint:
    return FrontierPoint(estimate([r.energy for r in rs]), estimate([r.accuracy for r in rs]), name, runs=rs)


def test_the_advantage_is_per_seed_against_that_seeds_own_dense_line():
    # Seed 100's dense runs: (50 J, 0.80) and (100 J, 0.90); seed 101's: (52 J, 0.78), (98 J, 0.90).
    env = upper_envelope([dense_point("half", runs((50.0, 0.80), (52.0, 0.78))),
                          dense_point("full", runs((100.0, 0.90), (98.0, 0.90)))])
    c = runs((60.0, 0.85), (61.0, 0.86))
    adv = advantage(estimate([0.85, 0.86]), estimate([60.0, 61.0]), env, c)
    # Seed 100 reaches 0.85 at 75 J; seed 101 reaches 0.86 at 52 + (0.08 / 0.12) × 46 J.
    e101 = 52.0 + 0.08 / 0.12 * 46.0
    per_seed = [1 - 60.0 / 75.0, 1 - 61.0 / e101]
    mean, half = sum(per_seed) / 2, T95[1] * abs(per_seed[0] - per_seed[1]) / 2
    assert adv.energy_saving == pytest.approx(mean)
    assert (adv.energy_saving_lo, adv.energy_saving_hi) == pytest.approx((mean - half, mean + half), rel=1e-4)
    # At equal energy: seed 100's line has 0.82 at 60 J, seed 101's 0.78 + 9/46 × 0.12 at 61 J.
    gains = [(0.85 - 0.82) * 100, (0.86 - (0.78 + 9.0 / 46.0 * 0.12)) * 100]
    assert adv.acc_gain_points == pytest.approx(sum(gains) / 2)
    assert adv.acc_gain_ci95 == pytest.approx(T95[1] * abs(gains[0] - gains[1]) / 2)
    assert (adv.n, adv.paired, adv.note) == (2, "seed", "")
    # The dense runs' energy noise enters: with seed 101's full run at 120 J the interval widens.
    wider = advantage(estimate([0.85, 0.86]), estimate([60.0, 61.0]), upper_envelope(
        [dense_point("half", runs((50.0, 0.80), (52.0, 0.78))), dense_point("full", runs((100.0, 0.90), (120.0, 0.90)))]), c)
    assert wider.energy_saving_hi - wider.energy_saving_lo > adv.energy_saving_hi - adv.energy_saving_lo


def test_seeds_are_paired_by_seed_not_by_position_and_unshared_seeds_by_order():
    env = upper_envelope([dense_point("half", runs((50.0, 0.80), (50.0, 0.70))),
                          dense_point("full", runs((100.0, 0.90), (100.0, 0.80)))])
    # The configuration's replicates come in the other order: seed 101 first.
    c = (Run(101, 1, 50.0, 0.75), Run(100, 0, 50.0, 0.85))
    adv = advantage(estimate([0.75, 0.85]), estimate([50.0, 50.0]), env, c)
    # Each seed is 0.05 above its own line at 50 J, and needs 75 J there: no spread at all.
    assert adv.acc_gain_points == pytest.approx(5.0) and adv.acc_gain_ci95 == pytest.approx(0.0, abs=1e-9)
    assert adv.energy_saving == pytest.approx(1 - 50.0 / 75.0) and adv.paired == "seed"
    other = (Run(200, 0, 50.0, 0.75), Run(201, 1, 50.0, 0.85))
    unpaired = advantage(estimate([0.75, 0.85]), estimate([50.0, 50.0]), env, other)
    assert unpaired.paired == "order" and "paired in order" in unpaired.note
    # In order, seed 200 (0.75) meets seed 100's line (0.80 at 50 J), 201 (0.85) seed 101's (0.70).
    assert unpaired.acc_gain_points == pytest.approx(5.0) and unpaired.acc_gain_ci95 > 50.0


def test_a_seed_whose_dense_runs_do_not_rise_is_skipped_with_a_note():
    env = upper_envelope([dense_point("half", runs((50.0, 0.80), (50.0, 0.85), (50.0, 0.80))),
                          dense_point("full", runs((100.0, 0.90), (100.0, 0.84), (100.0, 0.90)))])
    c = runs((60.0, 0.85), (60.0, 0.85), (60.0, 0.85))
    adv = advantage(estimate([0.85] * 3), estimate([60.0] * 3), env, c)
    assert adv.n == 2 and adv.energy_saving == pytest.approx(1 - 60.0 / 75.0)
    assert "1 seed(s) skipped for the saving" in adv.note


def test_without_runs_only_the_point_on_the_means_is_given():
    env = (point(50.0, 0.80, "half"), point(100.0, 0.90, "full"))
    adv = advantage(Estimate(0.85, math.nan, 1, math.nan), Estimate(60.0, math.nan, 1, math.nan), env)
    assert adv.energy_saving == pytest.approx(0.2) and adv.acc_gain_points == pytest.approx(3.0)
    assert math.isnan(adv.energy_saving_lo) and math.isnan(adv.acc_gain_ci95) and adv.n == 1


def frontier_rows(search_acc: list[float], search_energy: list[float]) -> list[dict]:
    """Dense ×1 at 0.90 ± 0.002 (se) and 100 J, dense ×0.5 at 0.80 ± 0.002 and 50 J, one
    searched configuration; two seeds each, so every t has df = 1."""
    return ordered(replicates("dense@1", "dense", 1.0, [0.898, 0.902], [100.0, 100.0], target=1.0)
                   + replicates("dense@0.5", "dense", 0.5, [0.798, 0.802], [50.0, 50.0], target=1.0)
                   + replicates("search-0000", "", 1.0, search_acc, search_energy))


def test_advantage_by_hand_when_ast_beats_training_less(tmp_path, capsys):
    # Searched: val_acc 0.85 (se 0.001), 60 J (se 0.5).
    root = build_store(tmp_path / "wins", frontier_rows([0.849, 0.851], [59.5, 60.5]))
    s = analyze([read_sweep(root)], ACC_ENERGY).sweeps[0]
    (frontier,) = s.frontiers
    assert frontier.usable and [p.config_id for p in frontier.envelope] == ["dense@0.5", "dense@1"]
    c = next(c for c in s.configurations if c.config_id == "search-0000")
    adv = s.advantages[c.key]
    # Per seed: seed 100 reaches 0.849 on its line (50 J, 0.798)..(100 J, 0.898) at 75.5 J
    # and spent 59.5 J; seed 101 reaches 0.851 at 74.5 J and spent 60.5 J.
    per_seed = [1 - 59.5 / 75.5, 1 - 60.5 / 74.5]
    mean, half = sum(per_seed) / 2, T95[1] * abs(per_seed[0] - per_seed[1]) / 2
    assert adv.energy_saving == pytest.approx(mean)
    assert (adv.energy_saving_lo, adv.energy_saving_hi) == pytest.approx((mean - half, mean + half), rel=1e-4)
    assert adv.energy_saving_lo > 0  # the verdict needs the low end above 0
    # Equal energy: seed 100's line has 0.817 at 59.5 J, seed 101's 0.823 at 60.5 J.
    assert adv.acc_gain_points == pytest.approx(3.0)
    assert adv.acc_gain_ci95 == pytest.approx(T95[1] * 0.2, rel=1e-6)
    assert adv.note == ""

    assert main([str(root)]) == 0
    printed = capsys.readouterr().out
    assert "best configuration search-0000 beats training less by 20.0% energy at equal accuracy" in printed
    assert "2 seeds paired by seed)" in printed
    rows = check_outputs(root / "report")
    header, body = rows[0], {r[rows[0].index("config_id")]: r for r in rows[1:]}
    row = body["search-0000"]
    assert float(row[header.index("energy_saving_vs_frontier")]) == pytest.approx(mean)
    assert row[header.index("paired_by")] == "seed"
    assert float(row[header.index("acc_gain_vs_frontier_points")]) == pytest.approx(3.0)
    assert row[header.index("trial_ids")] == "search-0000-r0;search-0000-r1"
    assert float(row[header.index("val_acc")]) == pytest.approx(0.85)  # the old column holds the mean
    assert float(row[header.index("val_acc_ci95")]) == pytest.approx(T95[1] * 0.001, rel=1e-4)
    assert (row[header.index("n_good")], row[header.index("n_total")]) == ("2", "2")
    md = (root / "report" / "report.md").read_text()
    assert "## Advantage over training less" in md and "How to read the plot" in md
    assert "+20.0%" in md and "+3.00 ± 2.54 pt" in md


def test_advantage_by_hand_when_ast_loses_to_training_less(tmp_path, capsys):
    # 0.82 costs the frontier 50 + 0.2 × 50 = 60 J; the searched configuration spends 80 J.
    root = build_store(tmp_path / "loses", frontier_rows([0.819, 0.821], [79.5, 80.5]))
    s = analyze([read_sweep(root)], ACC_ENERGY).sweeps[0]
    c = next(c for c in s.configurations if c.config_id == "search-0000")
    adv = s.advantages[c.key]
    # Seed 100 reaches 0.819 at 60.5 J and spent 79.5 J; seed 101 reaches 0.821 at 59.5 J, spent 80.5 J.
    assert adv.energy_saving == pytest.approx((1 - 79.5 / 60.5 + 1 - 80.5 / 59.5) / 2)
    assert adv.acc_gain_points == pytest.approx((0.82 - 0.86) * 100)  # the frontier has 0.86 at 80 J
    assert main([str(root)]) == 0
    printed = capsys.readouterr().out
    assert "No searched configuration beats training less" in printed and "-33.3%" in printed
    assert "No searched configuration beats training less" in (root / "report" / "report.md").read_text()


def test_outside_the_frontier_nothing_is_claimed(tmp_path):
    # More accurate than the best dense budget and cheaper than the cheapest: off both ranges.
    rows = frontier_rows([0.949, 0.951], [29.5, 30.5])
    s = analyze([sweep_from_rows("s", rows)], ACC_ENERGY)
    c = next(c for c in s.sweeps[0].configurations if c.config_id == "search-0000")
    adv = s.sweeps[0].advantages[c.key]
    assert math.isnan(adv.energy_saving) and math.isnan(adv.acc_gain_points)
    assert "above the frontier's range" in adv.note and "below the frontier's range" in adv.note
    # Nothing is read off the line, but no dense budget tried reaches it: it beats training less.
    (h,) = s.headlines
    assert h.best is None and h.beats
    assert headline_text(h) == ("search-0000 is more accurate than dense at every budget tried (val_acc 0.95 "
                                "against at most 0.9) and uses 70.0% less energy than that budget (dense@1), so "
                                "it beats training less by more than the frontier can measure (on means).")


def test_above_the_frontier_at_more_energy_claims_nothing():
    s = analyze([sweep_from_rows("s", frontier_rows([0.949, 0.951], [119.5, 120.5]))], ACC_ENERGY)
    (h,) = s.headlines
    assert not h.beats and "outside the dense frontier's accuracy range" in h.reason


def test_one_dense_budget_is_no_frontier():
    rows = ordered(replicates("dense@1", "dense", 1.0, [0.9], [100.0]) + replicates("search-0000", "", 1.0,
                                                                                     [0.85], [60.0]))
    a = analyze([sweep_from_rows("s", rows)], ACC_ENERGY)
    assert not a.sweeps[0].frontiers[0].usable
    assert "fewer than 2 dense budgets" in a.headlines[0].reason
    # Two old-style baseline trials are two dense runs at the whole budget: still one budget.
    old = [trial_row("b1", 0.9, 100.0, is_baseline=True), trial_row("b2", 0.8, 50.0, is_baseline=True),
           trial_row("t", 0.85, 60.0)]
    a = analyze([sweep_from_rows("s", old)], ACC_ENERGY)
    assert not a.sweeps[0].frontiers[0].usable and a.headlines[0].best is None


def test_no_saving_against_a_frontier_on_another_energy_axis():
    exclusive = {"energy_source": "rapl", "energy_scope": "device"}
    shared = {"energy_source": "rapl", "energy_scope": "device-shared"}
    rows = ordered(replicates("dense@1", "dense", 1.0, [0.90], [100.0], **exclusive)
                   + replicates("dense@0.5", "dense", 0.5, [0.80], [50.0], **exclusive)
                   + replicates("search-0000", "", 1.0, [0.85], [60.0], **exclusive)
                   + replicates("search-0001", "", 1.0, [0.85], [60.0], **shared))
    s = analyze([sweep_from_rows("s", rows)], ACC_ENERGY).sweeps[0]
    by_id = {c.config_id: c for c in s.configurations}
    same = s.advantages[by_id["search-0000"].key]
    other = s.advantages[by_id["search-0001"].key]
    assert same.energy_saving == pytest.approx(0.2) and same.acc_gain_points == pytest.approx(3.0)
    assert math.isnan(other.energy_saving) and math.isnan(other.acc_gain_points)
    assert "rapl (device-shared)" in other.note and "never compared across axes" in other.note


# ----------------------------------------------------------------- separability


def test_separability_is_a_paired_test_on_shared_seeds():
    # F is 0.01 above D on both seeds (same energy): paired, that is no noise at all. The
    # old overlap of two intervals called it "not separable". G against H: the seeds
    # disagree (+0.03, −0.01), so a paired t-test cannot tell them apart.
    rows = ordered(replicates("search-0000", "", 1.0, [0.853, 0.850, 0.847], [50.0, 50.0, 50.0])    # F
                   + replicates("search-0001", "", 1.0, [0.843, 0.840, 0.837], [50.0, 50.0, 50.0])  # D
                   + replicates("search-0002", "", 1.0, [0.93, 0.90, 0.91], [80.0, 80.0, 80.0])  # G
                   + replicates("search-0003", "", 1.0, [0.90, 0.91, 0.90], [80.0, 80.0, 80.0]))  # H
    a = analyze([sweep_from_rows("s", rows)], ACC_ENERGY)
    front = a.groups[0].fronts[0]
    by_id = {c.config_id: c for c in front.points}
    assert {c.config_id for c in front.front} == {"search-0000", "search-0002"}
    f, g = by_id["search-0000"], by_id["search-0002"]
    assert f.key not in front.not_separable
    assert [d.config_id for d in front.not_separable[g.key]] == ["search-0003"]
    assert not_separable_from(f, front.points, ACC_ENERGY) == ()
    assert separability(front, f, False, ACC_ENERGY) == "separable from search-0001 (paired t-test, p < 0.05)"
    assert separability(front, g, False, ACC_ENERGY) == ("not separable at 3 seeds from search-0003 (paired "
                                                         "t-test, p ≥ 0.05)")


def test_a_one_seed_side_is_not_compared_never_separable():
    rows = ordered(replicates("search-0000", "", 1.0, [0.90, 0.92], [50.0, 50.0])
                   + replicates("search-0001", "", 1.0, [0.80], [60.0]))
    front = analyze([sweep_from_rows("s", rows)], ACC_ENERGY).groups[0].fronts[0]
    (f,) = front.front
    assert [d.config_id for d in front.not_compared[f.key]] == ["search-0001"] and front.not_separable == {}
    assert separability(front, f, False, ACC_ENERGY) == "not compared with search-0001 (fewer than 2 seeds to pair)"


def test_a_single_seed_has_no_interval(tmp_path):
    rows = ordered([trial_row("a", 0.91, 50.0), trial_row("b", 0.90, 50.0)])
    a = analyze([sweep_from_rows("s", rows)], ACC_ENERGY)
    front = a.groups[0].fronts[0]
    assert front.not_separable == {}
    root = build_store(tmp_path / "s", rows + [trial_row("c", 0.5, 10.0, ended_at=3.0)])
    out = tmp_path / "rep"
    assert main([str(root), "--out", str(out)]) == 0
    with open(out / "front.csv") as f:
        table = list(csv.DictReader(f))
    assert {r["not_separable_from"] for r in table} == {""}


# ----------------------------------------------------------------- configurations as points


def test_two_replicates_make_one_front_point_at_their_mean():
    rows = [trial_row("r0", 0.90, 40.0, config_id="search-0000", replicate=0, ended_at=1.0),
            trial_row("s1", 0.84, 55.0, config_id="search-0001", ended_at=2.0),
            trial_row("r1", 0.80, 60.0, config_id="search-0000", replicate=1, ended_at=3.0)]
    a = analyze([sweep_from_rows("s", rows)], ACC_ENERGY)
    front = a.groups[0].fronts[0]
    assert len(front.points) == 2 and front.good_trials == 3
    (point_,) = front.front
    assert point_.config_id == "search-0000" and point_.trial_ids == ("r0", "r1")
    assert point_.metrics["val_acc"] == pytest.approx(0.85) and point_.metrics["energy_j"] == pytest.approx(50.0)
    # No baseline: the reference is 1.1 × the worst mean energy, 55 J → 60.5 J.
    assert a.groups[0].reference == pytest.approx((0.0, 60.5))
    assert front.hypervolume == pytest.approx(0.85 * 10.5)
    # After r0 alone the configuration sits at (0.90, 40 J); s1 adds nothing; r1 moves it.
    assert [v for _, v in front.curve] == pytest.approx([0.9 * 20.5, 0.9 * 20.5, 0.85 * 10.5])
    assert [t.trial_id for t in a.front_trials()] == ["r0", "r1"]


def test_savings_use_the_dense_baselines_replicate_mean():
    rows = ordered(replicates("dense@1", "dense", 1.0, [0.90, 0.92], [90.0, 110.0])
                   + replicates("search-0000", "", 1.0, [0.85], [40.0]))
    s = analyze([sweep_from_rows("s", rows)], ACC_ENERGY).sweeps[0]
    assert s.baseline.config_id == "dense@1" and s.baseline.n_good == 2
    (sv,) = s.savings
    assert sv.energy == pytest.approx(0.6) and sv.accuracy_points == pytest.approx(-6.0)


# ----------------------------------------------------------------- a store from before


def write_legacy_store(root: Path, rows: list[dict]) -> Path:
    """Trial files with the columns a store had before baselines got kinds and replicates."""
    columns = [(n, t) for n, t in TRIAL_COLUMNS if n not in NEW_COLUMNS] + list(SEARCHED.items())
    assert len(columns) == len(TRIAL_COLUMNS) - len(NEW_COLUMNS) + len(SEARCHED)
    schema = pa.schema(columns)
    (root / "trials").mkdir(parents=True)
    for i, row in enumerate(rows):
        row = dict(row, **{"ast.kp": 0.5 + i})
        table = pa.Table.from_pylist([{n: row.get(n) for n in schema.names}], schema=schema)
        pq.write_table(table, root / "trials" / f"{row['trial_id']}.parquet")
    (root / "sweep.json").write_text(json.dumps({"config": {"search": {"objectives": [
        {"metric": "val_acc", "mode": "max"}, {"metric": "energy_j", "mode": "min"}]}}}))
    return root


def test_a_store_written_before_replicates_reports_as_before(tmp_path, capsys):
    seeded = json.dumps({"ast": {"target_activation": 0.4, "strategy": "stale"}, "training": {"seed": 7}})
    rows = [trial_row("base", 0.95, 100.0, is_baseline=True, ended_at=1.0),
            trial_row("t1", 0.94, 40.0, ended_at=2.0, target=0.4, config_json=seeded),
            trial_row("t2", 0.90, 30.0, ended_at=3.0, target=0.2),
            trial_row("t3", 0.90, 60.0, ended_at=4.0),
            trial_row("t4", 0.90, 30.0, ended_at=5.0, target=0.2),
            trial_row("div", 0.1, 20.0, status="diverged", error="loss became nan", ended_at=6.0)]
    root = write_legacy_store(tmp_path / "old", rows)
    assert set(NEW_COLUMNS).isdisjoint(pq.read_schema(root / "trials" / "t1.parquet").names)
    sweep = read_sweep(root)
    t1 = next(t for t in sweep.trials if t.trial_id == "t1")
    base = next(t for t in sweep.trials if t.trial_id == "base")
    assert (t1.baseline_kind, t1.budget, t1.config_id, t1.replicate, t1.seed) == ("", 1.0, "t1", 0, 7)
    assert (base.baseline_kind, base.budget, base.seed) == ("dense", 1.0, None)

    out = tmp_path / "rep"
    assert main([str(root), "--out", str(out)]) == 0
    with open(out / "front.csv") as f:
        table = list(csv.DictReader(f))
    assert {r["trial_id"] for r in table} == {"base", "t1", "t2", "t4"}
    assert all(r["config_id"] == r["trial_id"] and r["trial_ids"] == r["trial_id"] for r in table)
    assert {(r["n_good"], r["n_total"]) for r in table} == {("1", "1")}
    assert {r["baseline_kind"] for r in table} == {"dense", ""}
    assert all(r["val_acc_ci95"] == "nan" for r in table)
    md = (out / "report.md").read_text()
    assert "+60.0 %" in md  # t1 against the baseline, as before
    assert "fewer than 2 dense budgets" in md  # one dense budget: no frontier, and the report says so
    assert "base (dense baseline)" in md and "seeds" not in md.split("## Trials")[1].split("## Advantage")[0]
    assert "accuracy: validation accuracy at its best epoch (val_acc); 5 of 5 finished trials have no test_acc" in md
    printed = capsys.readouterr().out
    assert "front of old: 4 of 5 trials (base, t1, t2, t4)" in printed


def test_a_mean_one_bit_off_the_frontier_end_is_on_it():
    top = (0.9944444444444445 + 0.9944444444444444) / 2  # two seeds' mean of 358/360
    frontier = [point(50.0, 0.8), point(100.0, top)]
    assert frontier_energy_at(frontier, math.nextafter(top, 1.0)) == pytest.approx(100.0)
    assert frontier_energy_at(frontier, math.nextafter(0.8, 0.0)) == pytest.approx(50.0)
    assert math.isnan(frontier_energy_at(frontier, top + 1e-6))


def test_a_searched_configuration_off_the_front_does_not_beat_training_less():
    # 0.85 at 110 J: dense x1 (0.90 at 100 J) dominates it; the frontier reaches 0.85 at 75 J.
    s = analyze([sweep_from_rows("s", frontier_rows([0.849, 0.851], [109.5, 110.5]))], ACC_ENERGY)
    (h,) = s.headlines
    assert not h.beats and not h.on_front and h.best.config_id == "search-0000"
    assert h.advantage.energy_saving == pytest.approx((1 - 109.5 / 75.5 + 1 - 110.5 / 74.5) / 2)
    text = headline_text(h)
    assert text.startswith("No searched configuration beats training less: none is on the front. The closest, "
                           "search-0000, saves -46.7% energy against dense at equal accuracy (95% CI ")
    assert text.endswith("2 seeds paired by seed); dense@1 (dense baseline) dominates it.")


def test_a_random_baseline_that_dominates_is_named_and_no_win_is_claimed():
    # search-0000 saves 20 % against the dense line, but random@0.3 is more accurate and cheaper.
    rows = frontier_rows([0.849, 0.851], [59.5, 60.5]) + ordered(
        replicates("random@0.3", "random", 1.0, [0.859, 0.861], [39.5, 40.5], target=0.3))
    (h,) = analyze([sweep_from_rows("s", rows)], ACC_ENERGY).headlines
    assert not h.on_front and not h.beats and h.advantage.energy_saving > 0.15
    text = headline_text(h)
    assert text.startswith("No searched configuration beats training less: none is on the front. The closest, "
                           "search-0000, saves 20.0% energy against dense")
    assert text.endswith("; random@0.3 (random a=0.3) dominates it.") and "beats training less by" not in text


def test_a_positive_saving_whose_interval_reaches_zero_is_no_verdict():
    # Seed 100 saves 1 − 60/71, seed 101 1 − 60/79: positive on average, far apart.
    (h,) = analyze([sweep_from_rows("s", frontier_rows([0.84, 0.86], [60.0, 60.0]))], ACC_ENERGY).headlines
    adv = h.advantage
    assert h.on_front and adv.energy_saving > 0 and adv.energy_saving_lo < 0 and not h.beats
    assert headline_text(h).startswith("Not shown to beat training less: the best, search-0000, saves 19.8% "
                                       "energy at equal accuracy, but its interval reaches 0 (95% CI ")


def test_the_headline_says_it_is_the_best_of_k_and_unconfirmed():
    rows = frontier_rows([0.849, 0.851], [59.5, 60.5]) + ordered(
        replicates("search-0001", "", 1.0, [0.80, 0.80], [90.0, 90.0]))
    (h,) = analyze([sweep_from_rows("s", rows)], ACC_ENERGY).headlines
    assert h.beats and h.picked_from == 2
    assert headline_text(h).endswith("2 seeds paired by seed; best of 2 searched, unconfirmed).")
    # With the sampler's phases recorded, it says how many were drawn at random.
    phased = [dict(r, search_phase="startup" if r["config_id"] == "search-0000" else "guided")
              if not r["is_baseline"] else r for r in rows]
    (h,) = analyze([sweep_from_rows("s", phased)], ACC_ENERGY).headlines
    assert h.phases == {"startup": 1, "guided": 1}
    assert headline_text(h).endswith("best of 2 searched, unconfirmed (1 drawn at random (start-up), 1 guided "
                                     "by the sampler)).")


def test_off_the_front_without_a_frontier_says_why():
    rows = ordered(replicates("dense@1", "dense", 1.0, [0.90, 0.90], [100.0, 100.0])
                   + replicates("search-0000", "", 1.0, [0.80, 0.80], [120.0, 120.0]))
    (h,) = analyze([sweep_from_rows("s", rows)], ACC_ENERGY).headlines
    assert not h.beats and h.best is None
    assert headline_text(h) == ("No searched configuration beats training less: none is on the front, and by how "
                                "much cannot be read (no dense frontier: fewer than 2 dense budgets completed (1)).")


# ----------------------------------------------------------------- the report's accuracy


def test_the_report_reads_test_accuracy_when_the_store_has_it(tmp_path, capsys):
    # Validation says search-0000 wins by far; the test split, which chose nothing, says it
    # only matches the dense line at 0.85: the report must follow the test split.
    rows = [dict(r, test_acc=r["val_acc"]) for r in frontier_rows([0.849, 0.851], [59.5, 60.5])]
    rows = [dict(r, val_acc=0.95) if r["config_id"] == "search-0000" else r for r in rows]
    root = build_store(tmp_path / "s", rows)
    assert main([str(root)]) == 0
    printed = capsys.readouterr().out
    assert "beats training less by 20.0% energy" in printed
    assert "accuracy: test accuracy at the epoch validation selected (test_acc)" in printed
    header, *body = check_outputs(root / "report")
    assert {r[header.index("accuracy_metric")] for r in body} == {"test_acc"}
    md = (root / "report" / "report.md").read_text()
    verdict = md.split("## Verdict")[1].split("## Trials")[0]
    assert "beats training less by 20.0%" in verdict and "test accuracy at the epoch validation selected" in verdict
    assert "objectives: test_acc (max), energy_j (min)" in md
    # Asked for validation accuracy, it is more accurate than every dense budget at less energy.
    assert main([str(root), "--accuracy", "val_acc", "--out", str(tmp_path / "v")]) == 0
    assert "more accurate than dense at every budget tried (val_acc 0.95" in capsys.readouterr().out


def test_a_store_without_test_accuracy_cannot_be_asked_for_it(tmp_path, capsys):
    root = build_store(tmp_path / "s", frontier_rows([0.849, 0.851], [59.5, 60.5]))
    assert main([str(root), "--accuracy", "test_acc"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("astray: error: --accuracy test_acc: 6 of 6 finished trials have no test_acc")
    assert len(err.splitlines()) == 1


# ----------------------------------------------------------------- confirmation on fresh seeds


def confirmation_rows(search_acc: list[float], search_energy: list[float]) -> list[dict]:
    """Seeds 102 and 103 (replicates 2, 3) of search-0000 and both dense budgets, trained
    after the search: dense ×1 at 0.90 / 100 J, dense ×0.5 at 0.80 / 50 J."""
    rows = []
    for cid, kind, budget, accs, energies in (("dense@1", "dense", 1.0, [0.899, 0.901], [100.0, 100.0]),
                                              ("dense@0.5", "dense", 0.5, [0.799, 0.801], [50.0, 50.0]),
                                              ("search-0000", "", 1.0, search_acc, search_energy)):
        for r, (acc, energy) in enumerate(zip(accs, energies), start=2):
            rows.append(trial_row(f"{cid}-r{r}", acc, energy, is_baseline=kind != "", baseline_kind=kind,
                                  budget=budget, config_id=cid, replicate=r, seed=100 + r,
                                  search_phase="confirmation", target=1.0 if kind else 0.3))
    return ordered(rows)


def test_the_headline_reports_the_confirmation_and_the_search_is_left_as_it_was():
    search = frontier_rows([0.849, 0.851], [59.5, 60.5])
    before = analyze([sweep_from_rows("s", search)], ACC_ENERGY)
    # On fresh seeds search-0000 is still 0.85 but spends 70 J: a smaller saving, 1 − 70/75.
    a = analyze([sweep_from_rows("s", search + confirmation_rows([0.849, 0.851], [69.9, 70.1]))], ACC_ENERGY)
    s = a.sweeps[0]
    assert len(s.confirmation_trials) == 6 and s.repeats == 2
    c = next(c for c in s.configurations if c.config_id == "search-0000")
    assert c.trial_ids == ("search-0000-r0", "search-0000-r1")  # the search's point, unchanged
    assert s.advantages[c.key] == before.sweeps[0].advantages[c.key]
    (h,) = a.headlines
    assert h.confirmation.n == 2 and h.confirmation.paired == "seed"
    # Seed 102 reaches 0.849 on its line (50 J, 0.799)..(100 J, 0.899) at 75 J, seed 103 0.851 at 75 J.
    assert h.confirmation.energy_saving == pytest.approx(1 - 70.0 / 75.0)
    text = headline_text(h)
    assert text.startswith("best configuration search-0000 beats training less by 6.7% energy at equal accuracy, "
                           "confirmed on 2 seeds never used in the search (95% CI ")
    assert "in the search, as the searched configuration, it saved 20.0%" in text
    # A confirmation that does not hold is said so, with both numbers.
    worse = analyze([sweep_from_rows("s", search + confirmation_rows([0.84, 0.86], [80.0, 70.0]))], ACC_ENERGY)
    (h,) = worse.headlines
    assert not h.beats and headline_text(h).startswith("Not confirmed: search-0000, the searched configuration, "
                                                       "saved 20.0% energy at equal accuracy in the search")


def test_an_off_front_headline_says_why_its_confirmation_is_not_shown():
    # Dominated by dense@1 in the search (0.85 at 110 J); on fresh seeds it reaches 0.95,
    # above every confirmed dense budget: the sentence says the confirmation ran and why
    # it cannot be read, instead of dropping it (frontier_sweep's store did so).
    rows = frontier_rows([0.849, 0.851], [109.5, 110.5]) + confirmation_rows([0.949, 0.951], [110.0, 110.0])
    (h,) = analyze([sweep_from_rows("s", rows)], ACC_ENERGY).headlines
    assert not h.on_front and h.confirmation is None
    text = headline_text(h)
    assert text.startswith("No searched configuration beats training less: none is on the front. The closest, ")
    assert "dominates it. Confirmation not shown: the confirmation of search-0000 cannot be read off its " \
           "frontier (" in text and "above the frontier's range" in text


def test_confirmation_picks_the_headline_and_the_dense_budgets_that_bracket_it(tmp_path):
    rows = frontier_rows([0.849, 0.851], [59.5, 60.5]) + ordered(
        replicates("dense@0.3", "dense", 0.3, [0.70, 0.70], [30.0, 30.0], target=1.0))
    root = build_store(tmp_path / "s", rows)
    picked, why = confirmation_pick(read_sweep(root))
    # The bracketing pair first, then its neighbour on the frontier (dense@1 has none above).
    assert picked == ["search-0000", "dense@0.5", "dense@1", "dense@0.3"]
    assert why.startswith("best configuration search-0000 beats training less")
    # Outside the frontier's accuracy range there is nothing to confirm against.
    root = build_store(tmp_path / "off", frontier_rows([0.949, 0.951], [119.5, 120.5]))
    picked, why = confirmation_pick(read_sweep(root))
    assert picked == [] and "outside the dense frontier's accuracy range" in why
