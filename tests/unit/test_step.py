"""The training step executes less work, and its gradient is the mean over what it trained."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from astray.sparse import METHODS, PIController
from astray.engine.step import StepSettings, _score, optimizer_step, train_step
from tests.helpers import FixedSelection, make_method, tiny_mlp

SETTINGS = StepSettings(entropy_weight=0.1, label_smoothing=0.0, autocast=contextlib.nullcontext)


def _batch(n: int = 12, classes: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 4, 4, generator=g), torch.randint(0, classes, (n,), generator=g)


def _reference_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None):
    ref = copy.deepcopy(model)
    losses = F.cross_entropy(ref(x), y, reduction="none")
    loss = (losses * w).sum() / len(y) if w is not None else losses.mean()
    loss.backward()
    return [p.grad.clone() for p in ref.parameters()]


def _controller():
    return PIController(target=0.3, kp=1.0, ki=0.02)


def test_reforward_trains_only_the_selected_samples_and_counts_them():
    model = tiny_mlp()
    x, y = _batch()
    chosen = [1, 4, 7, 9]
    rows_with_grad = []
    model[1].register_forward_hook(lambda m, i, o: rows_with_grad.append((i[0].shape[0], torch.is_grad_enabled())))
    s = train_step(model, x, y, torch.ones(12), FixedSelection(chosen), _controller(), SETTINGS,
                   sparse=True, progress=1.0)
    # One no-grad scoring pass over all 12, one training pass over the 4 selected.
    assert rows_with_grad == [(12, False), (4, True)]
    assert (s.forward, s.backward, s.global_active, s.loaded) == (16, 4, 4, 12)
    grads = [p.grad / s.global_active for p in model.parameters()]
    for g, r in zip(grads, _reference_grads(model, x[chosen], y[chosen])):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)


def test_dense_step_gradient_is_the_batch_mean():
    model = tiny_mlp()
    x, y = _batch()
    s = train_step(model, x, y, torch.ones(12), make_method("dense", 12), _controller(), SETTINGS,
                   sparse=False, progress=0.0)
    assert (s.forward, s.backward) == (12, 12)
    for p, r in zip(model.parameters(), _reference_grads(model, x, y)):
        torch.testing.assert_close(p.grad / s.global_active, r, rtol=1e-5, atol=1e-7)


def test_loss_weights_reach_the_gradient():
    model = tiny_mlp()
    x, y = _batch()
    w = torch.ones(12)
    w[::3] = 4.0  # stale mode's 1/keep_prob weights
    s = train_step(model, x, y, w, make_method("dense", 12), _controller(), SETTINGS, sparse=True, progress=1.0)
    for p, r in zip(model.parameters(), _reference_grads(model, x, y, w)):
        torch.testing.assert_close(p.grad / s.global_active, r, rtol=1e-5, atol=1e-7)


def test_nan_in_an_unselected_sample_does_not_reach_the_gradient():
    model = tiny_mlp()
    x, y = _batch()
    x[5] = float("nan")
    strategy = make_method("reforward", 12, shape_buckets=0, min_active_fraction=0.25)
    controller = PIController(target=0.3, kp=0.0, ki=0.0, initial_threshold=1e3, max_threshold=1e4)
    s = train_step(model, x, y, torch.ones(12), strategy, controller, SETTINGS, sparse=True, progress=1.0)
    assert s.backward == 3  # the top-k floor, and the NaN sample is not among them
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def _bn_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(5))
    model(_batch()[0])  # materialise the lazy layer
    model[1].reset_running_stats()
    return model


def test_scores_are_train_mode_significance_like_the_warm_up_calibration():
    """The threshold is calibrated on train-mode scores in dense epochs; the scoring pass
    of a sparse step must produce scores on that scale, not eval-mode ones."""
    from astray.sparse import significance

    model = _bn_model()
    x, y = _batch()
    with torch.no_grad():
        calibrated = significance(copy.deepcopy(model).train()(x), y, SETTINGS.entropy_weight)
    scored = significance(_score(model, x, SETTINGS), y, SETTINGS.entropy_weight)
    torch.testing.assert_close(scored, calibrated)
    assert model.training


def test_batchnorm_statistics_come_from_the_whole_batch_not_the_subset():
    """In a reforward step the scoring pass updates the running statistics from every
    loaded sample; the training forward on the (biased) subset leaves them alone."""
    model = _bn_model()
    x, y = _batch()
    x[[1, 4, 7, 9]] += 3.0  # the selected samples look different from the batch
    expected = copy.deepcopy(model)
    with torch.no_grad():
        expected(x)  # one momentum update from the whole batch
    train_step(model, x, y, torch.ones(12), FixedSelection([1, 4, 7, 9]), _controller(), SETTINGS,
               sparse=True, progress=1.0)
    torch.testing.assert_close(model[1].running_mean, expected[1].running_mean)
    torch.testing.assert_close(model[1].running_var, expected[1].running_var)
    assert model[1].momentum == 0.1  # restored after the subset forward


def test_optimizer_step_divides_by_the_weight_sum_not_the_count():
    """Randomly kept samples carry weight 1/p: the step is the weighted *mean* gradient."""
    model = tiny_mlp()
    x, y = _batch()
    w = torch.ones(12)
    w[::3] = 20.0  # keep probability 0.05
    before = [p.detach().clone() for p in model.parameters()]
    ref = copy.deepcopy(model)
    (F.cross_entropy(ref(x), y, reduction="none") * w).sum().div(w.sum()).backward()
    s = train_step(model, x, y, w, make_method("dense", 12), _controller(), SETTINGS, sparse=True, progress=1.0)
    assert s.global_weight == pytest.approx(float(w.sum()))
    optimizer_step(model, torch.optim.SGD(model.parameters(), lr=1.0), SETTINGS, s.global_active, 0.0,
                   s.global_weight)
    for p, b, r in zip(model.parameters(), before, ref.parameters()):
        torch.testing.assert_close(b - p.detach(), r.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("optimizer_cls", [torch.optim.AdamW, torch.optim.SGD])
def test_optimizer_step_is_skipped_when_nothing_was_active(optimizer_cls):
    model = tiny_mlp()
    kwargs = {"momentum": 0.9} if optimizer_cls is torch.optim.SGD else {}
    opt = optimizer_cls(model.parameters(), lr=0.1, weight_decay=0.1, **kwargs)
    x, y = _batch()
    # One real step first so momentum buffers exist and would move the weights.
    train_step(model, x, y, torch.ones(12), make_method("dense", 12), _controller(), SETTINGS, sparse=False, progress=0)
    assert optimizer_step(model, opt, SETTINGS, window_active=12, grad_clip=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    assert not optimizer_step(model, opt, SETTINGS, window_active=0, grad_clip=0.0)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
        assert p.grad is None


def test_dense_epochs_calibrate_the_controller():
    """In dense epochs the controller is fed what would have been active."""
    model = tiny_mlp()
    x, y = _batch(64)
    controller = PIController(target=0.25, kp=1.0, ki=0.0, initial_threshold=1e-3)
    for _ in range(40):
        train_step(model, x, y, torch.ones(64), make_method("dense", 64), controller, SETTINGS, sparse=False, progress=0)
        model.zero_grad()
    # Everything is above 1e-3 at first: the threshold must have risen towards the 75th percentile.
    assert controller.threshold > 1e-2


def test_dense_strategy_skips_the_shadow_update():
    model = tiny_mlp()
    x, y = _batch(64)
    controller = PIController(target=0.25, kp=1.0, ki=0.0, initial_threshold=1e-3)
    train_step(model, x, y, torch.ones(64), make_method("dense", 64), controller, SETTINGS, sparse=False, progress=0,
               calibrate=False)
    assert controller.threshold == pytest.approx(1e-3) and controller.updates == 0


def test_only_controller_strategies_calibrate_it():

    assert {name for name, cls in METHODS.items() if cls.uses_controller} == {"reforward", "stale"}


def _epoch_update(model: nn.Module, method, plan, x: torch.Tensor, y: torch.Tensor, batch: int) -> torch.Tensor:
    """The summed parameter change of one epoch of ``plan`` at fixed weights (each step is
    undone after it is measured), through the real step, window and divisor."""
    from astray.engine.totals import GradientWindow

    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    start = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    total = torch.zeros_like(start)
    weights = None if plan.weights is None else dict(zip(plan.indices.tolist(), plan.weights.tolist()))
    for i in range(0, plan.indices.numel(), batch):
        idx = plan.indices[i:i + batch]
        w = None if weights is None else torch.tensor([weights[j] for j in idx.tolist()])
        window = GradientWindow()
        s = train_step(model, x[idx], y[idx], w, method, _controller(), SETTINGS, sparse=True, progress=1.0)
        window.add(s)
        window.close(model, opt, SETTINGS, method.step_divisor, 0.0, s.synced)
        now = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
        total += now - start
        torch.nn.utils.vector_to_parameters(start.clone(), model.parameters())
    return total


def test_an_infobatch_epoch_updates_as_much_as_a_dense_epoch_in_expectation():
    """InfoBatch's rule (its reference code: weighted losses averaged over the batch): a
    pruned epoch takes fewer steps, each larger, and its expected total update equals a
    dense epoch's. AST's weighted mean (the divisor is the weights' sum) would shrink it
    to the share trained. Identical samples make every per-sample gradient the same, so
    the comparison isolates the normalisation; the scores decide what is pruned. Steps
    of one sample: a short last batch would otherwise weigh as a whole step (negligible
    over an epoch of hundreds of steps, not over a test's few)."""
    n, batch, r = 24, 1, 0.5
    model = tiny_mlp(seed=3)
    x = torch.randn(1, 3, 4, 4).expand(n, 3, 4, 4).contiguous()
    y = torch.zeros(n, dtype=torch.int64)
    method = make_method("infobatch", n, batch=batch, prune_ratio=r)
    method.observe(torch.arange(n), torch.cat([torch.full((n // 4,), 3.0), torch.full((3 * n // 4,), 1.0)]))
    dense = _epoch_update(model, make_method("dense", n, batch=batch),
                          make_method("dense", n).plan_epoch(0, _controller(), dense=True), x, y, batch)
    epochs = 100
    plans = [method.plan_epoch(e, _controller(), dense=False) for e in range(epochs)]
    pruned = sum(_epoch_update(model, method, p, x, y, batch) for p in plans) / epochs
    share = sum(p.activation for p in plans) / epochs
    assert share == pytest.approx(1 / 4 + 3 / 4 * (1 - r), abs=0.02)  # 0.625 of the samples trained
    ratio = float(pruned @ dense / (dense @ dense))
    assert ratio == pytest.approx(1.0, abs=0.05)
    # The same plans under AST's rule: each step the weighted mean, the epoch ~ the share trained.
    ast_rule = make_method("stale", n, batch=batch)
    weighted = sum(_epoch_update(model, ast_rule, p, x, y, batch) for p in plans[:20]) / 20
    assert float(weighted @ dense / (dense @ dense)) == pytest.approx(share, abs=0.06)


def _conv_model() -> nn.Sequential:
    """Takes any image size (global pooling), with BatchNorm."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    model[1].reset_running_stats()
    return model


def _images(n: int = 12, size: int = 8):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 5, (n,), generator=g)


def test_scoring_at_half_scale_sees_half_size_images_and_training_sees_full_size():
    model = _conv_model()
    x, y = _images()
    seen = []
    model.register_forward_pre_hook(lambda _m, args: seen.append((tuple(args[0].shape), torch.is_grad_enabled())))
    method = make_method("reforward", 12, shape_buckets=0, score_scale=0.5)
    controller = PIController(target=0.3, kp=0.0, ki=0.0, initial_threshold=1e-6, min_threshold=1e-9)
    s = train_step(model, x, y, None, method, controller, SETTINGS, sparse=True, progress=1.0)
    assert seen[0] == ((12, 3, 4, 4), False)  # the no-grad scoring forward, 8 px × 0.5
    assert all(shape[1:] == (3, 8, 8) and grad for shape, grad in seen[1:])
    assert s.scored == 12 and s.forward == 12 + s.backward


def test_downscale_averages_pixels_and_keeps_the_batch_at_scale_one():
    from astray.engine.step import downscale, scaled_size

    # One-pixel stripes: a copy that skipped pixels would keep only the 1s or only the 0s
    # (or alias them into coarser stripes); an antialiased one is their grey mean.
    x = (torch.arange(16) % 2).float().expand(2, 3, 16, 16).contiguous()
    assert downscale(x, 1.0) is x
    for scale, side in ((0.5, 8), (0.75, 12)):
        small = downscale(x, scale)
        assert small.shape == (2, 3, side, side)
        inner = small[..., 1:-1, 1:-1]  # away from the border's one-sided filter
        assert (inner - 0.5).abs().max() < 0.2, inner[0, 0]
    assert scaled_size(28, 28, 0.75) == (21, 21) and scaled_size(3, 3, 0.1) == (1, 1)
    assert downscale(x.to(torch.bfloat16), 0.5).dtype == torch.bfloat16


def test_below_scale_one_batchnorm_statistics_come_from_the_full_size_training_forward():
    """Statistics of the half-size copy are not those of the images evaluation sees: at
    s < 1 the scoring forward leaves the running statistics alone and the training
    forward on the selected samples updates them."""

    class HalfScale(FixedSelection):
        score_scale = 0.5

    model = _conv_model()
    x, y = _images()
    chosen = [1, 4, 7, 9]
    x[chosen] += 3.0  # the selected samples look different from the batch
    expected = _conv_model()
    with torch.no_grad():
        expected(x[chosen])  # one momentum update from the full-size subset
    train_step(model, x, y, None, HalfScale(chosen), _controller(), SETTINGS, sparse=True, progress=1.0)
    torch.testing.assert_close(model[1].running_mean, expected[1].running_mean)
    torch.testing.assert_close(model[1].running_var, expected[1].running_var)
    assert model[1].momentum == 0.1
