"""Significance that does not chase mislabelled samples: the upper-quantile band and the
reducible loss (docs/design.md §11)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from astray.config.load import load_config
from astray.engine.step import StepSettings, train_step
from astray.errors import ConfigError
from astray.sparse import PIController, select_active
from tests.helpers import make_method, tiny_mlp


def test_the_band_never_selects_above_the_ceiling_and_fills_the_floor_below_it():
    sig = torch.arange(20, dtype=torch.float32)  # 0..19
    chosen = select_active(sig, threshold=9.5, min_active_fraction=0.0, ceiling=15.0)
    assert chosen.tolist() == list(range(10, 16))
    # The floor (half the batch) is filled with the most significant *below* the ceiling.
    chosen = select_active(sig, threshold=100.0, min_active_fraction=0.5, ceiling=15.0)
    assert chosen.tolist() == list(range(6, 16))
    # Without the band the top of the batch is what it takes.
    assert select_active(sig, threshold=100.0, min_active_fraction=0.5).tolist() == list(range(10, 20))
    # A never-seen sample (+inf) is not "above" the band: it is kept.
    assert 3 in select_active(torch.tensor([0.1, 0.2, 0.3, math.inf]), 0.25, 0.0, ceiling=0.25).tolist()


def test_reforward_with_a_band_skips_each_batchs_top_quantile():
    torch.manual_seed(0)
    banded = make_method("reforward", upper_quantile=0.9, shape_buckets=0)
    plain = make_method("reforward", shape_buckets=0)
    for _ in range(20):
        sig = torch.rand(64)
        top = set(torch.topk(sig, 6).indices.tolist())  # above the 90th percentile
        assert not top & set(banded.select(sig, threshold=0.5).tolist())
        assert top <= set(plain.select(sig, threshold=0.5).tolist())


def test_the_controller_still_holds_the_target_with_the_band_on():
    """Scores drawn fresh every step; the band removes the top 15 % of each batch, and the
    controller lowers its threshold until the realised share is the target again."""
    method = make_method("reforward", upper_quantile=0.85, shape_buckets=0)
    controller = PIController(target=0.3, kp=1.0, ki=0.02, initial_threshold=0.9)
    gen = torch.Generator().manual_seed(1)
    rates = []
    for step in range(600):
        sig = torch.rand(128, generator=gen)
        k = method.select(sig, controller.threshold).numel()
        controller.update(k, 128, step / 100)
        rates.append(k / 128)
    assert abs(sum(rates[300:]) / 300 - 0.3) < 0.02
    assert controller.threshold < 0.7 - 0.05  # without the band it would sit near the 70th percentile


def test_stale_with_a_band_plans_no_sample_above_the_stored_scores_quantile():
    n = 400
    method = make_method("stale", dataset_size=n, batch=40, upper_quantile=0.8, max_age=0, keep_prob=0.1)
    scores = torch.linspace(0.0, 4.0, n)
    method.observe(torch.arange(n), scores)
    controller = PIController(target=0.3, kp=1.0, ki=0.02, initial_threshold=2.0)
    ceiling = float(torch.quantile(scores, 0.8))
    for epoch in range(1, 6):
        plan = method.plan_epoch(epoch, controller, dense=False)
        assert plan.indices.numel() > 0
        assert float(scores[plan.indices].max()) <= ceiling
    plain = make_method("stale", dataset_size=n, batch=40, max_age=0)
    plain.observe(torch.arange(n), scores)
    plan = plain.plan_epoch(1, PIController(target=0.3, kp=1.0, ki=0.02, initial_threshold=2.0), dense=False)
    assert float(scores[plan.indices].max()) > ceiling


def test_reducible_significance_is_softplus_of_the_loss_minus_the_irreducible_loss():
    method = make_method("reforward", significance="reducible")
    method.irreducible = torch.linspace(0.0, 3.0, 300)
    sig, idx = torch.tensor([2.0, 0.5, 4.0]), torch.tensor([0, 150, 299])
    expected = F.softplus(sig - method.irreducible[idx])
    assert torch.allclose(method.score(sig, idx), expected)
    # A sample the held-out model also gets wrong (high irreducible loss) ranks below an
    # equally lossy one it gets right: the ranking plain loss would give is reversed.
    high_il, low_il = method.score(torch.tensor([3.0, 3.0]), torch.tensor([299, 0]))
    assert high_il < low_il
    assert torch.equal(make_method("reforward").score(sig, idx), sig)


def test_the_step_selects_by_the_methods_score_of_the_batchs_samples():
    """train_step passes the batch's dataset indices to the method: with irreducible
    losses that make samples 0..3 hopeless, the step trains the other four."""
    torch.manual_seed(0)
    model = tiny_mlp(classes=5)
    x, y = torch.randn(8, 3, 4, 4), torch.randint(0, 5, (8,))
    method = make_method("reforward", dataset_size=8, batch=8, significance="reducible", shape_buckets=0,
                         min_active_fraction=0.5)
    method.irreducible = torch.tensor([50.0] * 4 + [0.0] * 4)
    settings = StepSettings(0.0, 0.0, lambda: torch.autocast("cpu", enabled=False))
    s = train_step(model, x, y, None, method, PIController(target=0.5, kp=1.0, ki=0.0, initial_threshold=1e3),
                   settings, indices=torch.arange(8), sparse=True, progress=1.0)
    assert s.trained.tolist() == [4, 5, 6, 7] and s.backward == 4


@pytest.mark.parametrize("strategy", ["dense", "random", "infobatch"])
def test_band_and_reducible_are_errors_where_a_method_does_not_select_by_significance(strategy):
    with pytest.raises(ConfigError, match=rf"ast.upper_quantile=0.9 is not allowed with ast.strategy={strategy}.*"
                                          r"reforward, stale"):
        load_config(None, [f"ast.strategy={strategy}", "ast.upper_quantile=0.9"])
    with pytest.raises(ConfigError, match=rf"ast.significance='reducible' is not allowed with "
                                          rf"ast.strategy={strategy}"):
        load_config(None, [f"ast.strategy={strategy}", "ast.significance=reducible"])
    with pytest.raises(ConfigError, match=r"ast.upper_quantile=0(\.0)? is out of range; allowed \(0, 1\]"):
        load_config(None, ["ast.strategy=reforward", "ast.upper_quantile=0"])
    with pytest.raises(ConfigError, match=r"ast.irreducible.folds=1 is out of range"):
        load_config(None, ["ast.strategy=reforward", "ast.significance=reducible", "ast.irreducible.folds=1"])
