"""Which epochs are sparse (warm-up, the final dense share rounded half up, InfoBatch's anneal: each
method's answer), and the learning-rate schedules, checked against torch's own schedulers."""

from __future__ import annotations

import pytest
import torch

from astray.config.load import build_config
from astray.config.sweep import load_sweep_spec
from astray.engine.schedule import lr_at
from astray.errors import ConfigError
from astray.sparse import MethodContext, create_method
from astray.sweep.trial_config import trial_run_config
from tests.conftest import REPO


def _plan(**ast) -> list[bool]:
    cfg = build_config({"ast": ast, "training": {"epochs": ast.pop("epochs", 10)}})
    method = create_method(cfg.ast, MethodContext(100, 0, cfg.training.epochs, 8))
    return [method.is_sparse(e) for e in range(cfg.training.epochs)]


def test_final_dense_fraction_rounds_half_up():
    # 0.25 x 10 = 2.5 final dense epochs: 3, not round()'s banker's 2.
    assert _plan(strategy="stale", warmup_epochs=1, final_dense_fraction=0.25) == [False] + [True] * 6 + [False] * 3
    # 0.58 x 25 = 14.5: 15, though the float product is 14.499...
    assert _plan(strategy="stale", warmup_epochs=1, final_dense_fraction=0.58, epochs=25) == \
        [False] + [True] * 9 + [False] * 15


def test_infobatch_trains_dense_from_its_anneal_point():
    assert _plan(strategy="infobatch", warmup_epochs=0, infobatch={"anneal": 0.875}, epochs=8) == [True] * 7 + [False]
    assert _plan(strategy="infobatch", warmup_epochs=1, infobatch={"anneal": 0.5}, epochs=8) == \
        [False] + [True] * 3 + [False] * 4


def test_dense_is_never_sparse_and_random_follows_the_ast_window():
    assert _plan(strategy="dense", warmup_epochs=0) == [False] * 10
    assert _plan(strategy="random", warmup_epochs=2, final_dense_fraction=0.1) == [False] * 2 + [True] * 7 + [False]


def test_stale_without_a_dense_warm_up_is_refused_in_one_line():
    with pytest.raises(ConfigError) as info:
        build_config({"ast": {"strategy": "stale", "warmup_epochs": 0}})
    message = str(info.value)
    assert "ast.warmup_epochs=0" in message and "ast.strategy=stale" in message and "\n" not in message
    build_config({"ast": {"strategy": "reforward", "warmup_epochs": 0}})  # scores are measured, not stored


# ------------------------------------------------------------------ learning-rate schedules

STEPS_PER_EPOCH = 50


def _training(**training) -> object:
    return build_config({"training": {"lr": 0.256, "batch_size": 256, "epochs": 6, **training}})


def _torch_lrs(scheduler_factory, epochs: int) -> list[float]:
    """What a real torch scheduler gives, stepped once per optimizer step."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.256)
    sched = scheduler_factory(opt)
    lrs = []
    for _ in range(epochs * STEPS_PER_EPOCH):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_step_schedule_equals_torch_multisteplr():
    cfg = _training(schedule="step", lr_milestones=[2, 4.5], lr_gamma=0.2, lr_warmup_epochs=0)
    ours = [lr_at(cfg, i / STEPS_PER_EPOCH, 1) for i in range(6 * STEPS_PER_EPOCH)]
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(
        o, milestones=[100, 225], gamma=0.2), 6)
    assert ours == pytest.approx(theirs, rel=1e-9)


def test_onecycle_schedule_follows_torch_onecyclelr():
    cfg = _training(schedule="onecycle", onecycle_pct_start=0.25, onecycle_div_factor=10,
                    onecycle_final_div_factor=100)
    ours = [lr_at(cfg, i / STEPS_PER_EPOCH, 1) for i in range(6 * STEPS_PER_EPOCH)]
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.256, total_steps=6 * STEPS_PER_EPOCH, pct_start=0.25, div_factor=10,
        final_div_factor=100), 6)
    # torch counts phases in whole steps (phase ends at step pct*N - 1); ours in progress.
    assert ours == pytest.approx(theirs, abs=0.015 * 0.256)  # one step of 300 apart at most
    assert max(ours) == pytest.approx(0.256, rel=1e-3) and ours[0] == pytest.approx(0.0256, rel=1e-3)


def test_constant_and_cosine_after_the_warm_up():
    const = _training(schedule="constant", lr_warmup_epochs=1)
    assert lr_at(const, 0.5, 1) == pytest.approx(0.128) and lr_at(const, 5.9, 1) == pytest.approx(0.256)
    cos = _training(schedule="cosine", lr_warmup_epochs=1)
    assert lr_at(cos, 1.0, 1) == pytest.approx(0.256) and lr_at(cos, 3.5, 1) == pytest.approx(0.128)
    assert lr_at(cos, 6.0, 1) == pytest.approx(0.0, abs=1e-12)


def test_a_dense_baseline_decays_at_the_same_shares_of_its_own_epochs():
    """Milestones are epochs of training.epochs; a baseline dense for half of them decays
    half as far in, as the shorter job would be configured."""
    spec = load_sweep_spec(str(REPO / "configs/quickstart.yaml"), [
        "training.epochs=20", "training.schedule=step", "training.lr_milestones=[10, 15]", "training.lr_gamma=0.1",
        "training.lr_warmup_epochs=0", "search.baselines={dense_budgets: [1.0, 0.5, 0.25]}"])
    runs = {b.value: build_config(trial_run_config(spec, {"baseline_kind": b.kind, "baseline_value": b.value}))
            for b in spec.search.parsed_baselines}
    assert {v: (r.training.epochs, r.training.lr_milestones) for v, r in runs.items()} == \
        {1.0: (20, [10, 15]), 0.5: (10, [5, 7.5]), 0.25: (5, [2.5, 3.75])}
    for run in runs.values():
        n = run.training.epochs
        factors = [lr_at(run, share * n, 1) / lr_at(run, 0, 1) for share in (0.49, 0.5, 0.74, 0.75)]
        assert factors == pytest.approx([1, 0.1, 0.1, 0.01]), n


def test_a_sparse_epoch_with_fewer_steps_follows_the_same_curve():
    """Pure in progress: 10 steps or 100 steps through epoch 3, the lr at 3.5 is the same."""
    cfg = _training(schedule="onecycle")
    assert lr_at(cfg, 3 + 5 / 10, 1) == lr_at(cfg, 3 + 50 / 100, 1)


@pytest.mark.parametrize("training,key", [
    ({"schedule": "linear"}, "training.schedule"),
    ({"schedule": "step"}, "training.schedule=step needs training.lr_milestones"),
    ({"lr_milestones": [3, 2]}, "training.lr_milestones"),
    ({"lr_milestones": [0, 2]}, "training.lr_milestones"),
    ({"lr_milestones": [2, 9]}, "training.lr_milestones"),
    ({"lr_milestones": ["two"]}, "training.lr_milestones"),
    ({"lr_gamma": 1.5}, "training.lr_gamma"),
    ({"onecycle_pct_start": 1.0}, "training.onecycle_pct_start"),
])
def test_bad_schedule_settings_are_one_line_errors(training, key):
    with pytest.raises(ConfigError) as info:
        _training(**training)
    assert key in str(info.value) and "\n" not in str(info.value)
