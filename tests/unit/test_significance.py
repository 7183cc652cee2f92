"""Per-sample significance = cross-entropy + w * normalised entropy."""

from __future__ import annotations

import math

import pytest
import torch

from astray.sparse import significance


def _reference(logits: torch.Tensor, targets: torch.Tensor, w: float) -> torch.Tensor:
    """Computed independently, sample by sample, in float64."""
    out = []
    for row, y in zip(logits.double(), targets.tolist()):
        probs = torch.exp(row - torch.logsumexp(row, 0))
        ce = -math.log(float(probs[y]))
        entropy = -sum(float(p) * math.log(float(p)) for p in probs if p > 0)
        out.append(ce + w * entropy / math.log(row.numel()))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("num_classes", [2, 10, 100])
@pytest.mark.parametrize("w", [0.0, 0.1, 1.0])
def test_matches_independent_computation(num_classes, w):
    torch.manual_seed(num_classes)
    logits = torch.randn(16, num_classes) * 3
    targets = torch.randint(0, num_classes, (16,))
    sig = significance(logits, targets, w)
    assert sig.shape == (16,)
    assert sig.dtype == torch.float32
    torch.testing.assert_close(sig.double(), _reference(logits, targets, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_classes", [2, 7, 1000])
def test_uniform_logits_entropy_term_is_exactly_w(num_classes):
    logits = torch.zeros(4, num_classes)
    targets = torch.zeros(4, dtype=torch.long)
    w = 0.37
    with_entropy = significance(logits, targets, w)
    plain = significance(logits, targets, 0.0)
    torch.testing.assert_close(with_entropy - plain, torch.full((4,), w), rtol=0, atol=1e-6)
    torch.testing.assert_close(plain, torch.full((4,), math.log(num_classes)))


def test_zero_weight_is_plain_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(32, 5)
    targets = torch.randint(0, 5, (32,))
    expected = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    torch.testing.assert_close(significance(logits, targets, 0.0), expected)


def test_confident_correct_sample_scores_below_wrong_one():
    logits = torch.tensor([[10.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    sig = significance(logits, torch.tensor([0, 1]), 0.1)
    assert sig[0] < 0.01 < sig[1]


def test_no_grad_attached_and_input_untouched():
    logits = torch.randn(8, 4, requires_grad=True)
    targets = torch.randint(0, 4, (8,))
    sig = significance(logits, targets, 0.1)
    assert not sig.requires_grad
    assert sig.grad_fn is None
    assert logits.grad is None


def test_half_precision_logits_scored_in_float32():
    torch.manual_seed(0)
    logits = torch.randn(8, 10)
    targets = torch.randint(0, 10, (8,))
    sig16 = significance(logits.to(torch.bfloat16), targets, 0.1)
    assert sig16.dtype == torch.float32
    torch.testing.assert_close(sig16, significance(logits.to(torch.bfloat16).float(), targets, 0.1))
