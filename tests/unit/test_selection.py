"""Sparse methods: the contract every method passes, select_active, and each method's plan."""

from __future__ import annotations

import math

import pytest
import torch

from astray.config.run import ASTConfig
from astray.errors import ConfigError
from astray.sparse import METHODS, MethodContext, PIController, create_method, select_active
from astray.sparse.selection import ShapeBuckets
from tests.helpers import make_method

N = 300


def _make(name: str, dataset_size: int = N, seed: int = 0):
    if name == "stale":
        return make_method(name, dataset_size, seed, batch=64, keep_prob=0.2)
    return make_method(name, dataset_size, seed)


def _controller(**kw) -> PIController:
    args = dict(target=0.3, kp=1.0, ki=0.02, initial_threshold=1.0)
    args.update(kw)
    return PIController(**args)


def _with_scores(strategy, seed: int = 0):
    """Feed known scores (half of the dataset) so the stale table is not all +inf."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(strategy.ctx.dataset_size, generator=gen)[: strategy.ctx.dataset_size // 2]
    strategy.observe(idx, torch.rand(idx.numel(), generator=gen) * 2.0)
    return strategy


def _check_plan(plan, n: int) -> None:
    idx = plan.indices
    assert idx.dtype == torch.int64
    assert idx.numel() > 0
    assert int(idx.min()) >= 0 and int(idx.max()) < n
    assert torch.unique(idx).numel() == idx.numel(), "plan holds a duplicate index"
    assert plan.candidates == n
    if plan.weights is not None:
        assert plan.weights.shape == idx.shape
        assert bool((plan.weights > 0).all())
        assert bool(torch.isfinite(plan.weights).all())


def _same_plan(a, b) -> bool:
    if not torch.equal(a.indices, b.indices):
        return False
    if (a.weights is None) != (b.weights is None):
        return False
    return a.weights is None or torch.equal(a.weights, b.weights)


# --------------------------------------------------------------------------- contract

@pytest.fixture(params=sorted(METHODS))
def name(request) -> str:
    return request.param


def test_registry_names_match_classes(name):
    assert METHODS[name].name == name
    assert METHODS[name].what and METHODS[name].cost and METHODS[name].weaknesses  # the docs tables read them


@pytest.mark.parametrize("dense", [False, True])
def test_plan_deterministic_for_seed_and_epoch(name, dense):
    a = _with_scores(_make(name, seed=3)).plan_epoch(2, _controller(), dense=dense)
    b = _with_scores(_make(name, seed=3)).plan_epoch(2, _controller(), dense=dense)
    assert _same_plan(a, b)


@pytest.mark.parametrize("dense", [False, True])
def test_plan_order_changes_with_epoch(name, dense):
    a = _with_scores(_make(name, seed=3)).plan_epoch(1, _controller(), dense=dense)
    b = _with_scores(_make(name, seed=3)).plan_epoch(2, _controller(), dense=dense)
    assert not torch.equal(a.indices, b.indices)


def test_plan_changes_with_seed(name):
    a = _make(name, seed=0).plan_epoch(0, _controller(), dense=True)
    b = _make(name, seed=1).plan_epoch(0, _controller(), dense=True)
    assert not torch.equal(a.indices, b.indices)


@pytest.mark.parametrize("dense", [False, True])
def test_plan_indices_valid(name, dense):
    plan = _with_scores(_make(name)).plan_epoch(0, _controller(), dense=dense)
    _check_plan(plan, N)
    assert 0 < plan.activation <= 1


def test_dense_plan_holds_every_index(name):
    plan = _with_scores(_make(name)).plan_epoch(4, _controller(), dense=True)
    _check_plan(plan, N)
    assert torch.equal(plan.indices.sort().values, torch.arange(N))
    assert plan.activation == 1.0
    if plan.weights is not None:
        assert bool((plan.weights == 1).all())


def test_select_returns_sorted_unique_in_range(name):
    torch.manual_seed(0)
    strategy = _make(name)
    sig = torch.rand(64)
    chosen = strategy.select(sig, threshold=0.5)
    assert chosen.numel() > 0
    assert int(chosen.min()) >= 0 and int(chosen.max()) < sig.numel()
    assert torch.equal(chosen, torch.unique(chosen))  # unique() sorts


def test_state_dict_round_trip(name, tmp_path):
    a = _with_scores(_make(name, seed=5))
    torch.save(a.state_dict(), tmp_path / "sel.pt")
    b = _make(name, seed=5)
    b.load_state_dict(torch.load(tmp_path / "sel.pt", weights_only=True))
    for epoch in (0, 1):
        assert _same_plan(a.plan_epoch(epoch, _controller(), dense=False),
                          b.plan_epoch(epoch, _controller(), dense=False))


def test_state_dict_is_a_snapshot(name):
    a = _with_scores(_make(name))
    state = a.state_dict()
    expected = _make(name)
    expected.load_state_dict(state)
    a.observe(torch.arange(N), torch.zeros(N))  # later observations must not leak into the snapshot
    b = _make(name)
    b.load_state_dict(state)
    assert _same_plan(b.plan_epoch(0, _controller(), False), expected.plan_epoch(0, _controller(), False))


def test_create_method_builds_each(name):
    ast = ASTConfig(strategy=name, min_active_fraction=0.1)
    method = create_method(ast, MethodContext(dataset_size=100, seed=0, epochs=4, batch_size=16, world=2))
    assert isinstance(method, METHODS[name])
    assert method.ast.min_active_fraction == 0.1
    assert method.settings == METHODS[name].Settings()  # defaults where ast.<name> is absent
    if name == "stale":
        assert method.window == 32  # one global batch of candidates per controller update


def test_create_method_unknown_name_lists_valid():
    cfg = ASTConfig()
    cfg.strategy = "masked"  # bypass validation the way a programmatic caller could
    with pytest.raises(ConfigError) as info:
        create_method(cfg, MethodContext(10, 0, 1, 4))
    message = str(info.value)
    assert "ast.strategy" in message and "\n" not in message
    for valid in METHODS:
        assert valid in message


def test_reforward_scores_before_backward_only():
    assert [n for n, m in METHODS.items() if m.scores_before_backward] == ["reforward"]


def test_dense_select_takes_everything():
    assert torch.equal(make_method("dense", 10).select(torch.zeros(7), 1.0), torch.arange(7))


def test_reforward_select_uses_threshold():
    sig = torch.tensor([0.1, 2.0, 0.3, 5.0, 0.2, 1.5])
    method = make_method("reforward", 10, shape_buckets=0, min_active_fraction=0.0)
    assert method.select(sig, 1.0).tolist() == [1, 3, 5]


# --------------------------------------------------------------------- select_active

def test_select_active_respects_threshold():
    torch.manual_seed(0)
    sig = torch.rand(200)
    chosen = select_active(sig, 0.6, 0.0)
    assert torch.equal(chosen, torch.nonzero(sig > 0.6).flatten())
    assert torch.equal(chosen, chosen.sort().values)


def test_select_active_floor_filled_with_top_k():
    torch.manual_seed(0)
    sig = torch.rand(100)
    chosen = select_active(sig, threshold=10.0, min_active_fraction=0.1)
    assert chosen.numel() == 10
    assert torch.equal(chosen, chosen.sort().values)
    assert set(chosen.tolist()) == set(torch.topk(sig, 10).indices.tolist())


def test_select_active_floor_not_used_when_enough_active():
    sig = torch.arange(20, dtype=torch.float32)
    chosen = select_active(sig, threshold=4.5, min_active_fraction=0.1)
    assert chosen.tolist() == list(range(5, 20))


def test_select_active_floor_rounds_up():
    sig = torch.arange(30, dtype=torch.float32)
    assert select_active(sig, 100.0, 0.1).numel() == 3
    assert select_active(sig, 100.0, 0.11).numel() == 4  # ceil(3.3)


def test_select_active_empty_when_no_floor():
    assert select_active(torch.rand(50), 10.0, 0.0).numel() == 0


def test_select_active_never_one_when_one_above_threshold():
    sig = torch.tensor([0.1, 0.2, 3.0, 0.3])
    chosen = select_active(sig, 1.0, 0.0)
    assert chosen.numel() == 2
    assert 2 in chosen.tolist()
    assert 3 in chosen.tolist()  # the next most significant fills the pair


@pytest.mark.parametrize("n", [2, 10, 20])
def test_select_active_floor_of_one_is_raised_to_two(n):
    sig = torch.linspace(0.0, 0.5, n)
    chosen = select_active(sig, threshold=10.0, min_active_fraction=0.05)
    assert chosen.numel() != 1
    assert chosen.numel() == 2


def test_select_active_single_sample_batch():
    assert select_active(torch.tensor([5.0]), 1.0, 0.0).tolist() == [0]


def test_select_active_never_selects_nan_with_enough_finite():
    torch.manual_seed(0)
    sig = torch.rand(200)
    nan = torch.rand(200) < 0.3
    sig[nan] = float("nan")
    for threshold, frac in [(0.5, 0.0), (0.5, 0.3), (10.0, 0.3), (10.0, 0.05)]:
        chosen = select_active(sig, threshold, frac)
        assert chosen.numel() > 0
        assert not bool(nan[chosen].any()), f"NaN selected at threshold={threshold}, floor={frac}"


def test_select_active_floor_never_filled_with_nan():
    sig = torch.tensor([float("nan")] * 6 + [0.1, 0.2, 0.3, 0.4])
    chosen = select_active(sig, threshold=10.0, min_active_fraction=0.9)
    assert not bool(torch.isnan(sig[chosen]).any())
    assert sorted(chosen.tolist()) == [6, 7, 8, 9]


# ------------------------------------------------------------------- shape buckets

def test_bucketed_sizes_come_from_the_buckets_and_sum_to_the_threshold_counts():
    """Every step trains a multiple of the quantum; the rounding error is carried, so an
    epoch trains as many samples as the threshold chose (within one quantum)."""
    g = torch.Generator().manual_seed(0)
    buckets = ShapeBuckets(batch_size=128, buckets=8)
    assert buckets.quantum == 16
    exact = bucketed = 0
    sizes = set()
    for _ in range(200):
        sig = torch.rand(128, generator=g) * 2
        threshold = float(torch.rand((), generator=g)) * 2
        exact += select_active(sig, threshold, 0.0).numel()
        chosen = select_active(sig, threshold, 0.0, buckets)
        sizes.add(chosen.numel())
        bucketed += chosen.numel()
    assert sizes <= {16 * i for i in range(9)}
    assert abs(bucketed - exact) <= 16


def test_bucket_fill_is_the_next_most_significant():
    """Rounding up adds the most significant samples below the threshold; rounding down
    drops the least significant above it: the selection is always a top-k."""
    sig = torch.tensor([9.0, 0.1, 8.0, 0.5, 7.0, 0.2, 6.0, 0.3])
    up = ShapeBuckets(batch_size=8, buckets=2)  # quantum 4
    chosen = select_active(sig, threshold=6.5, min_active_fraction=0.0, buckets=up)  # 3 above -> 4
    assert chosen.tolist() == [0, 2, 4, 6]
    assert up.carry == -1
    chosen = select_active(sig, threshold=7.5, min_active_fraction=0.0, buckets=up)  # 2 - 1 carried -> 0
    assert chosen.tolist() == [] and up.carry == 1


def test_bucketed_selection_keeps_the_per_step_floor():
    """A floor of 7 in a quantum of 16 rounds to 0 half the time; it must round up to a
    bucket instead, every step, however the carry stands."""
    g = torch.Generator().manual_seed(0)
    buckets = ShapeBuckets(batch_size=64, buckets=4)  # quantum 16
    sizes = [select_active(torch.rand(64, generator=g), 2.0, 0.1, buckets).numel() for _ in range(8)]
    assert sizes == [16] * 8  # ceil(0.1 x 64) = 7 -> one bucket; none above the threshold
    sizes = [select_active(torch.rand(64, generator=g), 2.0, 0.25, buckets).numel() for _ in range(4)]
    assert sizes == [16] * 4  # a floor that is a whole bucket stays one
    short = ShapeBuckets(batch_size=64, buckets=4)
    assert select_active(torch.rand(10, generator=g), 2.0, 0.5, short).numel() == 10  # capped at the batch


def test_bucketed_selection_skips_nan_and_caps_at_the_batch():
    sig = torch.tensor([float("nan"), 5.0, 4.0, 3.0, 2.0, float("nan")])
    buckets = ShapeBuckets(batch_size=8, buckets=2)  # quantum 4: a full bucket is 8 > 6 loaded
    chosen = select_active(sig, threshold=0.0, min_active_fraction=0.0, buckets=buckets)
    assert chosen.tolist() == [1, 2, 3, 4]


def test_reforward_buckets_reset_each_epoch():
    strategy = make_method("reforward", 100, batch=16, shape_buckets=4)
    strategy.select(torch.arange(16.0), threshold=12.5)  # 3 above -> 4, carry -1
    assert strategy.buckets.carry != 0
    strategy.plan_epoch(1, _controller(), dense=False)
    assert strategy.buckets.carry == 0


def test_reforward_buckets_are_sized_on_the_rank_batch():
    assert make_method("reforward", 100, batch=32, world=2, shape_buckets=4).buckets.quantum == 8
    assert make_method("reforward", 100, batch=32, shape_buckets=0).buckets is None


# ------------------------------------------------------------------------ stale

def test_stale_unseen_samples_always_kept():
    strategy = make_method("stale", 200, seed=0, keep_prob=0.05, batch=32, min_active_fraction=0.0)
    seen = torch.arange(0, 200, 2)
    strategy.observe(seen, torch.full((seen.numel(),), 1e-4))  # far below any threshold
    ctrl = _controller(initial_threshold=1e3, max_threshold=1e3, kp=0.0, ki=0.0)
    for epoch in range(5):
        plan = strategy.plan_epoch(epoch, ctrl, dense=False)
        kept = set(plan.indices.tolist())
        assert set(range(1, 200, 2)) <= kept  # every unseen (odd) index


def test_stale_initial_plan_keeps_everything():
    strategy = make_method("stale", 100, seed=0, keep_prob=0.1, batch=16, min_active_fraction=0.0)
    plan = strategy.plan_epoch(0, _controller(), dense=False)
    assert sorted(plan.indices.tolist()) == list(range(100))
    assert bool((plan.weights == 1).all())


def test_stale_high_kept_low_sampled_with_inverse_weight():
    n, keep_prob, threshold = 4000, 0.1, 1.0
    strategy = make_method("stale", n, seed=0, keep_prob=keep_prob, batch=256, min_active_fraction=0.0)
    scores = torch.where(torch.arange(n) % 2 == 0, torch.tensor(5.0), torch.tensor(0.01))
    strategy.observe(torch.arange(n), scores)
    ctrl = _controller(initial_threshold=threshold, kp=0.0, ki=0.0)  # fixed threshold
    plan = strategy.plan_epoch(0, ctrl, dense=False)
    _check_plan(plan, n)
    high = scores[plan.indices] > threshold
    assert int(high.sum()) == n // 2  # every high-score sample
    assert bool((plan.weights[high] == 1).all())
    low_kept = int((~high).sum())
    assert abs(low_kept / (n // 2) - keep_prob) < 0.03
    assert torch.allclose(plan.weights[~high], torch.tensor(1 / keep_prob))


def test_stale_below_threshold_weighted_count_is_unbiased():
    n, keep_prob, threshold = 1000, 0.1, 0.5
    strategy = make_method("stale", n, seed=7, keep_prob=keep_prob, batch=128, min_active_fraction=0.0)
    scores = torch.rand(n, generator=torch.Generator().manual_seed(0))
    strategy.observe(torch.arange(n), scores)
    below = int((scores <= threshold).sum())
    ctrl = _controller(initial_threshold=threshold, kp=0.0, ki=0.0)
    epochs = 200
    total = 0.0
    for epoch in range(epochs):
        plan = strategy.plan_epoch(epoch, ctrl, dense=False)
        low = scores[plan.indices] <= threshold
        total += float(plan.weights[low].sum())
    # per-epoch s.d. is sqrt(below * (1/p - 1)) ~ 67, so the mean's s.d. is ~5
    assert abs(total / epochs - below) < 0.04 * below


def test_stale_keep_prob_zero_drops_all_below_threshold():
    strategy = make_method("stale", 100, seed=0, keep_prob=0.0, batch=50, min_active_fraction=0.0)
    scores = torch.linspace(0, 2, 100)
    strategy.observe(torch.arange(100), scores)
    plan = strategy.plan_epoch(0, _controller(initial_threshold=1.0, kp=0.0, ki=0.0), dense=False)
    assert bool((scores[plan.indices] > 1.0).all())
    assert plan.indices.numel() == int((scores > 1.0).sum())


@pytest.mark.parametrize("n, window", [(1000, 256), (1024, 256), (100, 7), (5, 64)])
def test_stale_plan_steps_controller_once_per_window(n, window):
    strategy = make_method("stale", n, seed=0, keep_prob=0.05, batch=window, min_active_fraction=0.0)
    strategy.observe(torch.arange(n), torch.rand(n, generator=torch.Generator().manual_seed(0)))
    ctrl = _controller()
    strategy.plan_epoch(0, ctrl, dense=False)
    assert ctrl.updates == math.ceil(n / window)
    strategy.plan_epoch(1, ctrl, dense=False)
    assert ctrl.updates == 2 * math.ceil(n / window)


def test_stale_dense_plan_does_not_step_controller():
    ctrl = _controller()
    make_method("stale", 100, batch=10, min_active_fraction=0.0).plan_epoch(0, ctrl, dense=True)
    assert ctrl.updates == 0


def test_stale_controller_moves_threshold_toward_target():
    # All scores known and above the start threshold: keeping everything is too much,
    # so the threshold must rise while the plan is built and the plan must shrink.
    n = 2048
    strategy = make_method("stale", n, seed=0, keep_prob=0.0, batch=64, min_active_fraction=0.0)
    strategy.observe(torch.arange(n), torch.rand(n, generator=torch.Generator().manual_seed(0)) + 1.0)
    ctrl = _controller(target=0.3, initial_threshold=0.5, kp=2.0, ki=0.05)
    plan = strategy.plan_epoch(0, ctrl, dense=False)
    assert ctrl.threshold > 0.5
    assert plan.activation < 0.9


def test_stale_observe_updates_scores():
    strategy = make_method("stale", 10, keep_prob=0.0, batch=10, min_active_fraction=0.0)
    strategy.observe(torch.tensor([2, 5]), torch.tensor([0.25, 4.0], requires_grad=True) * 1)
    assert strategy.table.scores[2] == 0.25 and strategy.table.scores[5] == 4.0
    assert math.isinf(strategy.table.scores[0])


def test_stale_load_state_dict_rejects_wrong_size():
    small = make_method("stale", 10, min_active_fraction=0.0).state_dict()
    with pytest.raises(ValueError):
        make_method("stale", 20, min_active_fraction=0.0).load_state_dict(small)


# --------------------------------------------------------------------------- staleness, random, infobatch

def test_stale_scores_older_than_max_age_are_trained_again():
    n, max_age = 600, 3
    cap = n // max_age
    strategy = make_method("stale", n, seed=0, keep_prob=0.0, batch=50, max_age=max_age, min_active_fraction=0.0)
    strategy.plan_epoch(0, _controller(), dense=True)
    strategy.observe(torch.arange(n), torch.full((n,), 1e-4))  # all far below any threshold
    refreshed = set()
    for epoch in range(1, max_age + 2):
        age = epoch - strategy.table.scored_epoch
        due = set(torch.nonzero(age >= max_age).flatten().tolist())
        plan = strategy.plan_epoch(epoch, _controller(initial_threshold=1.0, kp=0.0, ki=0.0), dense=False)
        kept = set(plan.indices.tolist())
        trained_due = due & kept
        assert len(trained_due) == min(len(due), cap)  # every due score, up to the epoch's cap
        if len(due) > cap:  # the oldest go first
            assert min(age[list(trained_due)]) >= max(age[list(due - trained_due)])
        # The dense epoch's stamps are staggered: about a third falls due in each epoch.
        assert len(trained_due) > 0.8 * cap
        refreshed |= trained_due
        strategy.observe(plan.indices, torch.full((plan.indices.numel(),), 1e-4))
    assert refreshed == set(range(n))  # within max_age + 1 epochs every score was measured again


def test_stale_burst_of_due_scores_is_spread_at_the_cap_oldest_first():
    n, max_age = 400, 4
    strategy = make_method("stale", n, seed=0, keep_prob=0.0, batch=100, max_age=max_age, min_active_fraction=0.0)
    strategy.load_state_dict({"scores": torch.full((n,), 1e-4),
                              "scored_epoch": torch.cat([torch.full((n // 2,), 0), torch.full((n // 2,), 1)])})
    counts = []
    for epoch in (9, 10, 11):  # every score is due, the first half older
        plan = strategy.plan_epoch(epoch, _controller(initial_threshold=1.0, kp=0.0, ki=0.0), dense=False)
        counts.append(plan.indices.numel())
        if epoch == 9:
            assert bool((plan.indices < n // 2).all())  # oldest first
        strategy.observe(plan.indices, torch.full((plan.indices.numel(),), 1e-4))
    assert counts == [n // max_age] * 3  # never the whole table at once


def test_stale_dense_epoch_stamps_are_backdated_within_max_age_and_reproducible():
    def stamps(seed):
        strategy = make_method("stale", 500, seed=seed, keep_prob=0.0, batch=50, max_age=4, min_active_fraction=0.0)
        strategy.plan_epoch(7, _controller(), dense=True)
        strategy.observe(torch.arange(500), torch.rand(500))
        return strategy.table.scored_epoch

    first = stamps(0)
    assert set(first.tolist()) == {4, 5, 6, 7}  # 0 to max_age - 1 epochs older than epoch 7
    assert torch.equal(first, stamps(0))  # every rank and a resumed run stamp alike
    assert not torch.equal(first, stamps(1))


def test_stale_controller_holds_the_realised_activation_refreshes_included():
    # Scores that persist (a hard sample stays hard): the 70 % below the threshold are
    # trained only when their scores fall due. The refreshes count inside the target.
    n, target = 4000, 0.3
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(n, generator=gen)
    strategy = make_method("stale", n, seed=0, keep_prob=0.0, batch=128, max_age=5, min_active_fraction=0.0)
    controller = _controller(target=target, initial_threshold=0.5)
    strategy.plan_epoch(0, controller, dense=True)
    strategy.observe(torch.arange(n), base)
    shares, forced = [], []
    for epoch in range(1, 25):
        due = int((epoch - strategy.table.scored_epoch >= 5).sum())
        plan = strategy.plan_epoch(epoch, controller, dense=False)
        strategy.observe(plan.indices, base[plan.indices] * (0.9 + 0.2 * torch.rand(plan.indices.numel(), generator=gen)))
        shares.append(plan.indices.numel() / n)
        forced.append(due / n)
    assert min(forced[5:]) > 0.05  # refreshes really happen every epoch...
    assert max(forced) < 0.25  # ...spread out, never a burst the target cannot hold
    assert sum(shares[4:]) / len(shares[4:]) == pytest.approx(target, abs=0.01)
    assert max(abs(s - target) for s in shares[4:]) < 0.05


def test_stale_max_age_zero_never_forces():
    n = 100
    strategy = make_method("stale", n, seed=0, keep_prob=0.0, batch=50, max_age=0, min_active_fraction=0.0)
    strategy.observe(torch.arange(n), torch.full((n,), 1e-4))
    plan = strategy.plan_epoch(50, _controller(kp=0.0, ki=0.0), dense=False)
    assert plan.indices.numel() < n


@pytest.mark.parametrize("target", [0.1, 0.3, 0.5])
def test_random_keeps_a_uniform_target_share_and_ignores_scores(target):
    strategy = make_method("random", 1000, seed=1, target_activation=target)
    controller = _controller()
    plan = strategy.plan_epoch(2, controller, dense=False)
    assert plan.indices.numel() == round(target * 1000) and plan.weights is None
    assert controller.updates == 0
    strategy.observe(torch.arange(1000), torch.arange(1000).float())  # scores change nothing
    assert torch.equal(strategy.plan_epoch(2, controller, dense=False).indices, plan.indices)


def test_infobatch_keeps_above_mean_and_a_reweighted_share_below():
    n, r = 4000, 0.5
    strategy = make_method("infobatch", n, seed=0, prune_ratio=r)
    losses = torch.cat([torch.full((n // 4,), 3.0), torch.full((3 * n // 4,), 1.0)])  # mean 1.5
    strategy.observe(torch.arange(n), losses)
    plan = strategy.plan_epoch(1, _controller(), dense=False)
    kept_high = losses[plan.indices] == 3.0
    assert int(kept_high.sum()) == n // 4  # every sample at or above the mean
    assert bool((plan.weights[kept_high] == 1.0).all())
    low = ~kept_high
    assert abs(int(low.sum()) - (1 - r) * 3 * n // 4) < 0.05 * n  # a random (1 - r) share of the rest
    assert torch.allclose(plan.weights[low], torch.full((int(low.sum()),), 1 / (1 - r)))
    # Reweighted, the kept low-loss samples stand for all of them in expectation.
    assert float(plan.weights[low].sum()) == pytest.approx(3 * n / 4, rel=0.05)


def test_infobatch_keeps_unseen_samples():
    strategy = make_method("infobatch", 100, seed=0)
    strategy.observe(torch.arange(50), torch.rand(50))
    plan = strategy.plan_epoch(1, _controller(), dense=False)
    assert set(range(50, 100)) <= set(plan.indices.tolist())


def test_stale_forced_refreshes_do_not_wind_up_the_controller():
    n = 400
    strategy = make_method("stale", n, seed=0, keep_prob=0.0, batch=100, max_age=1, min_active_fraction=0.0)
    strategy.plan_epoch(0, _controller(), dense=True)
    strategy.observe(torch.arange(n), torch.rand(n, generator=torch.Generator().manual_seed(0)))
    controller = _controller(initial_threshold=0.7)
    plan = strategy.plan_epoch(2, controller, dense=False)  # every score is overdue, and due
    assert plan.indices.numel() == n
    assert controller.updates == 0  # refreshes alone exceed the target: no threshold could help


def test_stale_table_from_before_score_ages_forces_nothing():
    n = 100
    strategy = make_method("stale", n, seed=0, keep_prob=0.0, batch=50, max_age=2, min_active_fraction=0.0)
    strategy.load_state_dict({"scores": torch.full((n,), 1e-4)})  # an older checkpoint: no scored_epoch
    plan = strategy.plan_epoch(9, _controller(kp=0.0, ki=0.0), dense=False)
    assert plan.indices.numel() < n
