"""The analysis behind reports: fronts, hypervolumes, exclusions and savings, checked by brute force."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from astray.analysis.compute import analyze, exclusion_reason, front_of, reference_point, savings_against
from astray.pareto import dominates, hypervolume, non_dominated
from astray.analysis.read import parse_objectives, sweep_from_rows
from astray.errors import ConfigError
from astray.schema import Objective

ACC_ENERGY = (Objective("val_acc", True), Objective("energy_j", False))


def trial_row(trial_id: str, val_acc: float = 0.9, energy_j: float = 100.0, status: str = "completed",
              is_baseline: bool = False, **extra) -> dict:
    """One trials-table row as the store returns it (searched keys go in ``extra``)."""
    target = extra.pop("target", 0.3)
    row = {"trial_id": trial_id, "status": status, "is_baseline": is_baseline, "val_acc": val_acc,
           "final_val_acc": val_acc, "val_macro_f1": val_acc, "energy_j": energy_j,
           "energy_source": "model", "flops": 1e9, "flops_dense": 2e9, "time_s": 10.0, "epochs": 2,
           "activation_rate": 1.0 if is_baseline else target, "error": None, "node_id": "n",
           "started_at": 0.0, "ended_at": None, "report_s": 0.1,
           "config_json": json.dumps({"ast": {"target_activation": target,
                                              "strategy": "dense" if is_baseline else "stale"}}),
           "ast.target_activation": target}
    row.update(extra)
    return row


def brute_force_front(points: np.ndarray, maximize: list[bool]) -> set[int]:
    """The definition, written independently: no other finite point is >= everywhere and > somewhere."""
    signed = np.where(maximize, points, -points)
    finite = ~np.isnan(points).any(axis=1)
    out = set()
    for i in np.flatnonzero(finite):
        others = signed[finite]
        dominated = ((others >= signed[i]).all(axis=1) & (others > signed[i]).any(axis=1)).any()
        if not dominated:
            out.add(int(i))
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("maximize", [[True, False], [False, False], [True, False, True], [False, True, False]])
def test_front_matches_brute_force_with_ties_duplicates_and_nan(seed, maximize):
    rng = np.random.default_rng(seed)
    # Few distinct values per axis: many ties and exact duplicates.
    points = rng.integers(0, 6, size=(40, len(maximize))).astype(float)
    points[rng.choice(40, 5, replace=False), rng.integers(0, len(maximize))] = np.nan
    points[7] = points[3]  # at least one exact duplicate
    expected = brute_force_front(points, maximize)
    assert set(non_dominated(points.tolist(), maximize)) == expected

    objectives = [Objective(m, up) for m, up in zip(("val_acc", "energy_j", "time_s"), maximize)]
    rows = [trial_row(f"t{i:02d}", **{o.metric: float(v) for o, v in zip(objectives, p)})
            for i, p in enumerate(points)]
    analysis = analyze([sweep_from_rows("s", rows)], objectives)
    front = analysis.groups[0].fronts[0]
    assert {t.trial_id for t in front.front} == {f"t{i:02d}" for i in expected}
    assert analysis.sweeps[0].excluded_counts["nan"] == int(np.isnan(points).any(axis=1).sum())


def test_equal_points_are_all_on_the_front_and_a_tie_on_one_axis_is_dominated():
    pts = [[0.9, 100.0], [0.9, 100.0], [0.9, 120.0], [0.8, 100.0], [0.95, 150.0]]
    assert non_dominated(pts, [True, False]) == [0, 1, 4]
    assert not dominates(pts[0], pts[1], [True, False])
    assert dominates(pts[0], pts[2], [True, False]) and dominates(pts[0], pts[3], [True, False])


def test_front_is_ordered_best_first_on_the_first_objective():
    rows = [trial_row("a", 0.80, 50.0), trial_row("b", 0.95, 90.0), trial_row("c", 0.90, 70.0)]
    sweep = sweep_from_rows("s", rows)
    assert [t.trial_id for t in front_of(list(sweep.trials), ACC_ENERGY)] == ["b", "c", "a"]


def test_hypervolume_two_objectives_by_hand():
    up_down = [True, False]
    # Boxes [0,0.5]x[4,10] and [0,0.8]x[6,10]: 3 + 3.2 - overlap 2 = 4.2.
    assert hypervolume([[0.5, 4.0], [0.8, 6.0]], [0.0, 10.0], up_down) == pytest.approx(4.2)
    # Dominated points, duplicates and NaN add nothing.
    assert hypervolume([[0.5, 4.0], [0.8, 6.0], [0.4, 7.0], [0.5, 4.0], [math.nan, 1.0]],
                       [0.0, 10.0], up_down) == pytest.approx(4.2)
    # A point not strictly better than the reference everywhere contributes nothing.
    assert hypervolume([[0.9, 10.0], [0.9, 11.0], [0.0, 1.0]], [0.0, 10.0], up_down) == 0.0
    assert hypervolume([], [0.0, 10.0], up_down) == 0.0
    # Both minimised: the staircase of (1,3), (2,2), (3,1) under (4,4) is 3 + 2 + 1.
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4], [False, False]) == pytest.approx(6.0)
    assert hypervolume([[2.0]], [5.0], [False]) == 3.0


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("maximize", [[False, False, False], [True, False, True], [True, True, False, False]])
def test_hypervolume_many_objectives_equals_a_cell_count(seed, maximize):
    # On integer points every dominated region is a union of unit cells, so counting the
    # cells some point dominates is an exact brute-force hypervolume.
    rng = np.random.default_rng(seed)
    d, side = len(maximize), 6
    pts = rng.integers(0, side, size=(12, d))
    pts[3] = pts[5]
    signed_ref = np.full(d, side)
    # Express points and reference in each objective's own direction.
    real = np.where(maximize, -pts, pts).astype(float)
    ref = np.where(maximize, -signed_ref, signed_ref).astype(float)
    cells = np.array(list(itertools.product(range(side), repeat=d)))
    covered = (pts[None, :, :] <= cells[:, None, :]).all(axis=2).any(axis=1)
    assert hypervolume(real.tolist(), ref.tolist(), maximize) == pytest.approx(float(covered.sum()))


def test_hypervolume_three_objectives_against_monte_carlo():
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 1, size=(15, 3))
    ref = np.array([1.0, 1.0, 1.0])
    samples = rng.uniform(0, 1, size=(200_000, 3))
    covered = (pts[None, :, :] <= samples[:, None, :]).all(axis=2).any(axis=1)
    assert hypervolume(pts.tolist(), ref.tolist(), [False] * 3) == pytest.approx(covered.mean(), abs=0.005)


def test_exclusions_are_counted_by_reason():
    rows = [trial_row("ok1"), trial_row("ok2", 0.8, 50.0), trial_row("run", status="running"),
            trial_row("retry", status="retrying"), trial_row("div", status="diverged", error="loss is nan"),
            trial_row("err", status="error", error="OOM"), trial_row("nan", val_acc=math.nan),
            trial_row("none", energy_j=None), trial_row("odd", status="paused")]
    analysis = analyze([sweep_from_rows("s", rows)], ACC_ENERGY)
    s = analysis.sweeps[0]
    assert dict(s.excluded_counts) == {"unfinished": 2, "diverged": 1, "error": 1, "nan": 2, "stopped early": 0,
                                   "status 'paused'": 1}
    assert {t.trial_id for t in s.good} == {"ok1", "ok2"}
    assert {t.trial_id for t in s.failed} == {"div", "err"}
    assert {t.trial_id for t in analysis.groups[0].fronts[0].front} == {"ok1", "ok2"}
    # NaN on a metric that is not an objective does not exclude.
    assert exclusion_reason(sweep_from_rows("s", [trial_row("f", flops=None)]).trials[0], ACC_ENERGY) is None


def test_savings_arithmetic():
    base = trial_row("base", 0.9, 100.0, is_baseline=True, flops=1000.0, time_s=10.0)
    trial = trial_row("t", 0.885, 40.0, flops=300.0, time_s=8.0)
    other = trial_row("o", 0.9, 40.0, energy_source="nvml")
    sweep = sweep_from_rows("s", [base, trial, other])
    sv = savings_against(sweep.trials[1], sweep.trials[0])
    assert sv.energy == pytest.approx(0.6) and sv.flops == pytest.approx(0.7) and sv.time == pytest.approx(0.2)
    assert sv.accuracy_points == pytest.approx(-1.5) and sv.energy_comparable
    mixed = savings_against(sweep.trials[2], sweep.trials[0])
    assert math.isnan(mixed.energy) and not mixed.energy_comparable
    summary = analyze([sweep], (Objective("val_acc", True), Objective("flops", False))).sweeps[0]
    assert summary.baseline.trial_id == "base" and [s.trial_id for s in summary.savings] == ["t", "o"]


def test_reference_point_from_the_baseline_and_without_one():
    ref, rule = reference_point(ACC_ENERGY, [(0.9, 200.0)], [(0.8, 100.0), (0.95, 300.0)])
    assert ref == pytest.approx((0.0, 220.0)) and "baseline" in rule
    # Several sweeps' baselines: the loosest (largest) anchors a minimised objective.
    ref, _ = reference_point(ACC_ENERGY, [(0.9, 200.0), (0.9, 250.0)], [])
    assert ref == pytest.approx((0.0, 275.0))
    ref, rule = reference_point(ACC_ENERGY, [], [(0.8, 100.0), (0.95, 300.0)])
    assert ref == pytest.approx((0.0, 330.0)) and "no usable dense baseline" in rule


def test_no_baseline_means_no_savings_and_a_worst_observed_reference():
    rows = [trial_row("a", 0.8, 50.0), trial_row("b", 0.9, 80.0)]
    analysis = analyze([sweep_from_rows("s", rows)], ACC_ENERGY)
    s, g = analysis.sweeps[0], analysis.groups[0]
    assert s.baseline is None and s.savings == () and "no dense baseline" in s.baseline_note
    assert g.reference == pytest.approx((0.0, 88.0))
    # 0.8 * (88 - 50) + 0.9 * (88 - 80) - 0.8 * (88 - 80)
    assert g.fronts[0].hypervolume == pytest.approx(0.8 * 38 + 0.1 * 8)


def test_a_diverged_baseline_gives_no_savings():
    rows = [trial_row("base", status="diverged", is_baseline=True), trial_row("a", 0.8, 50.0)]
    s = analyze([sweep_from_rows("s", rows)], ACC_ENERGY).sweeps[0]
    assert s.baseline is None and "diverged" in s.baseline_note and s.savings == ()


def test_hypervolume_curve_follows_ended_at_and_counts_failed_trials():
    rows = [trial_row("late", 0.9, 50.0, ended_at=30.0), trial_row("early", 0.8, 50.0, ended_at=10.0),
            trial_row("fail", status="error", ended_at=20.0), trial_row("run", status="running")]
    analysis = analyze([sweep_from_rows("s", rows)], ACC_ENERGY)
    g = analysis.groups[0]
    ref = g.reference[1]  # 1.1 x the worst energy, 55
    assert [k for k, _ in g.fronts[0].curve] == [1, 2, 3]
    assert [v for _, v in g.fronts[0].curve] == pytest.approx([0.8 * (ref - 50), 0.8 * (ref - 50),
                                                               0.9 * (ref - 50)])
    assert not analysis.notes  # every finished trial had ended_at
    # Without ended_at the store's order decides, and a note says so.
    rows = [trial_row("first", 0.9, 50.0), trial_row("second", 0.8, 50.0)]
    analysis = analyze([sweep_from_rows("s", rows)], ACC_ENERGY)
    assert [v for _, v in analysis.groups[0].fronts[0].curve] == pytest.approx([4.5, 4.5])
    assert any("ended_at" in n for n in analysis.notes)


def test_mixed_energy_sources_are_split_never_on_one_axis():
    a = sweep_from_rows("a", [trial_row("b1", 0.9, 100.0, is_baseline=True), trial_row("a1", 0.85, 40.0)])
    b = sweep_from_rows("b", [trial_row("b1", 0.92, 30.0, energy_source="nvml"),
                              trial_row("b2", 0.80, 10.0, energy_source="nvml")])
    analysis = analyze([a, b], ACC_ENERGY)
    assert analysis.split_by_energy_source
    assert [g.energy_source for g in analysis.groups] == ["model", "nvml"]
    model, nvml = analysis.groups
    assert model.reference == pytest.approx((0.0, 110.0))  # sweep a's baseline
    assert nvml.reference == pytest.approx((0.0, 33.0))  # no baseline measured by NVML: worst observed
    assert {t.trial_id for t in model.combined.front} == {"b1", "a1"}
    assert all(t.energy_source == "nvml" for t in nvml.combined.front)
    assert any("different sources" in n for n in analysis.notes)
    # Without an energy objective nothing is split.
    no_energy = analyze([a, b], (Objective("val_acc", True), Objective("flops", False)))
    assert len(no_energy.groups) == 1 and not no_energy.split_by_energy_source


def test_device_shared_readings_are_grouped_apart_and_give_no_energy_saving():
    """Same meter, but one reading covered a device other trials used at the same time."""
    rows = [trial_row("base", 0.9, 100.0, is_baseline=True, energy_source="rapl", energy_scope="device"),
            trial_row("x1", 0.88, 40.0, energy_source="rapl", energy_scope="device"),
            trial_row("s1", 0.89, 20.0, energy_source="rapl", energy_scope="device-shared"),
            trial_row("s2", 0.80, 10.0, energy_source="rapl", energy_scope="device-shared")]
    analysis = analyze([sweep_from_rows("a", rows)], ACC_ENERGY)
    assert analysis.split_by_energy_source
    assert [(g.energy_source, g.energy_shared) for g in analysis.groups] == [("rapl", False), ("rapl", True)]
    exclusive, shared = analysis.groups
    assert {t.trial_id for t in exclusive.fronts[0].front} == {"base", "x1"}
    assert {t.trial_id for t in shared.fronts[0].front} == {"s1", "s2"}  # s1 does not "dominate" x1
    savings = {sv.trial_id: sv for sv in analysis.sweeps[0].savings}
    assert savings["x1"].energy == pytest.approx(0.6) and savings["x1"].energy_comparable
    assert math.isnan(savings["s1"].energy) and not savings["s1"].energy_comparable
    assert savings["s1"].flops == pytest.approx(0.0)  # FLOPs and time still compare
    assert shared.energy_label == "rapl (device-shared)"
    assert any("shared with other jobs" in n for n in analysis.notes)


def test_one_scope_throughout_is_not_split():
    rows = [trial_row("base", 0.9, 100.0, is_baseline=True, energy_scope="process"),
            trial_row("x1", 0.88, 40.0, energy_scope="process")]
    assert not analyze([sweep_from_rows("a", rows)], ACC_ENERGY).split_by_energy_source


def test_comparison_fronts_share_one_reference_and_the_combined_front_dominates():
    a = sweep_from_rows("a", [trial_row("ba", 0.9, 100.0, is_baseline=True), trial_row("a1", 0.85, 40.0)])
    b = sweep_from_rows("b", [trial_row("bb", 0.9, 120.0, is_baseline=True), trial_row("b1", 0.88, 45.0)])
    g = analyze([a, b], ACC_ENERGY).groups[0]
    assert g.reference == pytest.approx((0.0, 132.0))
    assert g.combined.hypervolume >= max(f.hypervolume for f in g.fronts)
    assert {t.key for t in g.combined.front} == {("a", "ba"), ("a", "a1"), ("b", "b1")}  # ba dominates bb


@pytest.mark.parametrize("text, needle", [
    ("val_acc:up", "'up'"), ("accuracy:max,energy_j:min", "'accuracy'"), ("val_acc", "METRIC:max"),
    ("val_acc:max", "at least two"), ("val_acc:max,val_acc:min", "twice"),
])
def test_bad_objectives_are_one_line_config_errors(text, needle):
    with pytest.raises(ConfigError) as info:
        parse_objectives(text)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_objectives_parse():
    assert parse_objectives(" val_acc:max , time_s:min,flops:min ") == (
        Objective("val_acc", True), Objective("time_s", False), Objective("flops", False))
