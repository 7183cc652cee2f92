"""Per-sample FLOPs measured with FlopCounterMode, on a copy of the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from astray.engine.flops import SampleFlops, measure_sample_flops


@pytest.mark.parametrize("a, b, c", [(8, 16, 4), (32, 64, 10)])
def test_two_layer_mlp_flops(a, b, c):
    model = nn.Sequential(nn.Linear(a, b, bias=False), nn.ReLU(), nn.Linear(b, c, bias=False))
    flops = measure_sample_flops(model, torch.randn(a))
    assert flops.forward == 2 * (a * b + b * c)
    # weight grads of both layers, plus the input grad of the second layer only
    assert flops.backward == 2 * a * b + 2 * (2 * b * c)


def test_flops_do_not_depend_on_probe_batch():
    model = nn.Sequential(nn.Linear(6, 12, bias=False), nn.ReLU(), nn.Linear(12, 3, bias=False))
    x = torch.randn(6)
    assert measure_sample_flops(model, x, batch=2) == measure_sample_flops(model, x, batch=8)


def test_conv_model_counts_are_positive():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 5))
    flops = measure_sample_flops(model, torch.randn(3, 16, 16))
    conv = 2 * 3 * 8 * 9 * 16 * 16
    assert flops.forward >= conv
    assert flops.backward >= conv  # at least the conv weight grad


def test_real_model_untouched_batchnorm_stats_mode_and_grads():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3))
    model.eval()
    bn = model[1]
    mean, var, tracked = bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()
    params = [p.detach().clone() for p in model.parameters()]
    measure_sample_flops(model, torch.randn(3, 8, 8) * 5 + 3)
    assert torch.equal(bn.running_mean, mean)
    assert torch.equal(bn.running_var, var)
    assert torch.equal(bn.num_batches_tracked, tracked)
    assert not model.training
    for p, before in zip(model.parameters(), params):
        assert p.grad is None
        assert torch.equal(p, before)


def test_sample_flops_arithmetic():
    f = SampleFlops(forward=10.0, backward=20.0)
    assert f.executed(samples_forward=7, samples_backward=3) == 10 * 7 + 20 * 3
    assert f.executed(0, 0) == 0
    assert f.dense(5) == 150.0
    assert f.dense(100) == f.executed(100, 100)
    # re-forward at activation a: all scored + a subset forward+backward
    assert f.executed(100 + 30, 30) / f.dense(100) == pytest.approx((130 * 10 + 30 * 20) / 3000)


def test_scoring_forwards_cost_their_own_flops():
    f = SampleFlops(forward=12.0, backward=24.0, scoring=3.0)  # a scoring forward at s = 0.5 of a conv net
    # reforward at a = 0.3 on 100 samples: 100 scored, 30 trained (forward + backward).
    assert f.executed(100 + 30, 30, samples_scored=100) == 100 * 3 + 30 * 12 + 30 * 24
    assert f.executed(100 + 30, 30, samples_scored=100) / f.dense(100) == pytest.approx((300 + 1080) / 3600)
    # Without a scoring figure a scoring forward costs a full one, as before.
    assert SampleFlops(12.0, 24.0).executed(130, 30, samples_scored=100) == SampleFlops(12.0, 24.0).executed(130, 30)


def test_a_forward_at_half_the_size_costs_about_a_quarter():
    from astray.engine.flops import measure_forward_flops

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    full = measure_forward_flops(model, torch.randn(3, 32, 32))
    half = measure_forward_flops(model, torch.randn(3, 16, 16))
    assert half / full == pytest.approx(0.25, rel=0.01)  # the head's FLOPs do not scale
    assert full == pytest.approx(measure_sample_flops(model, torch.randn(3, 32, 32)).forward)
