"""PIController: direction, tracking on a drifting plant, anti-windup, ramps, state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from astray.config.run import ASTConfig
from astray.sparse import PIController, select_active
from astray.sparse.selection import ShapeBuckets


def _controller(**kw) -> PIController:
    args = dict(target=0.3, kp=1.0, ki=0.02)
    args.update(kw)
    return PIController(**args)


def test_threshold_rises_when_activation_above_target():
    ctrl = _controller()
    before = ctrl.threshold
    after = ctrl.update(active=90, total=100, epoch=5.0)
    assert after > before
    assert ctrl.threshold == after


def test_threshold_falls_when_activation_below_target():
    ctrl = _controller()
    before = ctrl.threshold
    after = ctrl.update(active=5, total=100, epoch=5.0)
    assert after < before


def test_threshold_holds_at_target():
    ctrl = _controller(initial_threshold=0.7)
    for _ in range(10):
        ctrl.update(active=30, total=100, epoch=5.0)
    assert ctrl.threshold == pytest.approx(0.7)


def test_from_config_uses_config_values():
    cfg = ASTConfig(target_activation=0.2, kp=0.7, ki=0.03, initial_threshold=2.0, max_threshold=50.0)
    ctrl = PIController.from_config(cfg)
    assert (ctrl.target, ctrl.kp, ctrl.ki) == (0.2, 0.7, 0.03)
    assert ctrl.threshold == pytest.approx(2.0)
    assert ctrl.max_threshold == 50.0


def _simulate_plant(target: float, steps: int = 2000, batch: int = 256, sigma: float = 1.0,
                    seed: int = 0, buckets: int = 0) -> float:
    """Significance ~ lognormal whose scale falls from 2.3 to 0.001 over ``steps`` updates.

    With ``buckets``, the trained count is reforward's real selection, rounded to shape
    buckets, and the controller is fed that realised count. Returns the realised mean
    activation over the last half.
    """
    rng = np.random.default_rng(seed)
    ctrl = PIController.from_config(ASTConfig(target_activation=target))
    mu = np.linspace(math.log(2.3), math.log(1e-3), steps)[:, None]
    sig = np.exp(mu + sigma * rng.standard_normal((steps, batch)))
    rounding = ShapeBuckets(batch, buckets) if buckets else None
    rates = []
    for t in range(steps):
        if rounding is None:
            active = int(np.count_nonzero(sig[t] > ctrl.threshold))
        else:
            active = select_active(torch.from_numpy(sig[t]), ctrl.threshold, 0.0, rounding).numel()
        rates.append(active / batch)
        ctrl.update(active, batch, epoch=t / 100)
    tail = rates[steps // 2:]
    return sum(tail) / len(tail)


@pytest.mark.parametrize("target", [0.1, 0.3, 0.5])
def test_tracks_target_through_shape_buckets(target):
    """Rounded subsets (8 sizes of a 256 batch) and the realised counts fed back: the
    controller still holds the target."""
    realised = _simulate_plant(target, sigma=1.0, buckets=8)
    assert abs(realised - target) < 0.05, f"target {target}, realised {realised:.4f}"


@pytest.mark.parametrize("target", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("sigma", [0.5, 1.5])
def test_tracks_target_on_drifting_plant(target, sigma):
    realised = _simulate_plant(target, sigma=sigma)
    assert abs(realised - target) < 0.03, f"target {target}, realised {realised:.4f}"


def test_threshold_clamped_to_bounds():
    ctrl = _controller(min_threshold=0.1, max_threshold=10.0, ki=0.5)
    for _ in range(200):
        ctrl.update(100, 100, epoch=5.0)
    assert ctrl.threshold == pytest.approx(10.0)
    for _ in range(400):
        ctrl.update(0, 100, epoch=5.0)
    assert ctrl.threshold == pytest.approx(0.1)


def test_anti_windup_at_upper_bound():
    # A large integral_limit: only the saturation rule can stop the wind-up.
    ctrl = _controller(target=0.3, kp=1.0, ki=0.05, max_threshold=1.5, integral_limit=100.0)
    ctrl.update(100, 100, epoch=5.0)  # error 0.7 pushes the threshold onto the bound
    assert ctrl.threshold == pytest.approx(1.5)
    integral_at_bound = ctrl.integral
    for _ in range(200):
        ctrl.update(100, 100, epoch=5.0)
    assert ctrl.threshold == pytest.approx(1.5)
    assert ctrl.integral == pytest.approx(integral_at_bound), "integral kept growing at the bound"

    # Flip the error: nothing active. The threshold must leave the bound on the first
    # update whose (EMA) error is negative.
    for _ in range(50):
        ctrl.update(0, 100, epoch=5.0)
        if ctrl.ema - ctrl.target < 0:
            break
    assert ctrl.ema - ctrl.target < 0
    assert ctrl.threshold < 1.5


def test_anti_windup_at_lower_bound():
    ctrl = _controller(target=0.3, kp=1.0, ki=0.05, min_threshold=0.8, integral_limit=100.0)
    ctrl.update(0, 100, epoch=5.0)
    assert ctrl.threshold == pytest.approx(0.8)
    integral_at_bound = ctrl.integral
    for _ in range(200):
        ctrl.update(0, 100, epoch=5.0)
    assert ctrl.integral == pytest.approx(integral_at_bound)
    for _ in range(50):
        ctrl.update(100, 100, epoch=5.0)
        if ctrl.ema - ctrl.target > 0:
            break
    assert ctrl.ema - ctrl.target > 0
    assert ctrl.threshold > 0.8


def test_integral_clamped_to_limit():
    ctrl = _controller(ki=1e-4, integral_limit=0.5)
    for _ in range(100):
        ctrl.update(100, 100, epoch=5.0)
    assert ctrl.integral == pytest.approx(0.5)


def test_kp_warmup_ramp():
    error_rate = 0.9  # first update: EMA = rate, error = 0.6
    error = error_rate - 0.3

    def log_move(epoch: float) -> float:
        ctrl = _controller(kp=2.0, ki=0.0, kp_warmup_epochs=2)
        before = math.log(ctrl.threshold)
        ctrl.update(90, 100, epoch=epoch)
        return math.log(ctrl.threshold) - before

    assert log_move(0.0) == pytest.approx(0.0, abs=1e-12)
    assert log_move(1.0) == pytest.approx(0.5 * 2.0 * error)
    assert log_move(2.0) == pytest.approx(2.0 * error)
    assert log_move(10.0) == pytest.approx(2.0 * error)


def test_ki_warmup_ramp():
    def log_move(epoch: float) -> float:
        ctrl = _controller(kp=0.0, ki=1.0, ki_warmup_epochs=4)
        before = math.log(ctrl.threshold)
        ctrl.update(90, 100, epoch=epoch)  # integral = error = 0.6
        return math.log(ctrl.threshold) - before

    assert log_move(0.0) == pytest.approx(0.0, abs=1e-12)
    assert log_move(1.0) == pytest.approx(0.25 * 0.6)
    assert log_move(4.0) == pytest.approx(0.6)


def test_state_dict_round_trip_reproduces_future_thresholds():
    gen = torch.Generator().manual_seed(1)
    feed = [int(x) for x in torch.randint(0, 101, (60,), generator=gen)]
    a = _controller(kp_warmup_epochs=1.0)
    for i, active in enumerate(feed[:30]):
        a.update(active, 100, epoch=i / 20)
    state = a.state_dict()

    b = _controller(kp_warmup_epochs=1.0)
    b.load_state_dict(state)
    assert b.threshold == a.threshold
    for i, active in enumerate(feed[30:], start=30):
        assert b.update(active, 100, epoch=i / 20) == a.update(active, 100, epoch=i / 20)
    assert b.state_dict() == a.state_dict()


def test_state_dict_survives_torch_save(tmp_path):
    a = _controller()
    for active in (10, 50, 90):
        a.update(active, 100, epoch=1.0)
    torch.save(a.state_dict(), tmp_path / "ctrl.pt")
    b = _controller()
    b.load_state_dict(torch.load(tmp_path / "ctrl.pt", weights_only=True))
    assert b.update(40, 100, 1.0) == a.update(40, 100, 1.0)


def test_fresh_state_round_trip_keeps_ema_unset():
    a = _controller()
    b = _controller(initial_threshold=5.0)
    b.load_state_dict(a.state_dict())
    assert b.ema is None
    assert b.update(70, 100, 1.0) == a.update(70, 100, 1.0)


def test_zero_total_leaves_state_unchanged():
    ctrl = _controller()
    ctrl.update(50, 100, epoch=1.0)
    state = ctrl.state_dict()
    threshold = ctrl.threshold
    assert ctrl.update(0, 0, epoch=1.0) == threshold
    assert ctrl.threshold == threshold
    assert ctrl.state_dict() == state
