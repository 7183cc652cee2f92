"""The training run end to end: files, executed work, resume, stopping rules."""

from __future__ import annotations

import math
import subprocess

import pandas as pd
import pytest
import torch

from astray.config.load import load_config
from astray.engine.records import METRICS_SCHEMA, read_metrics
from astray.engine.trainer import run
from tests.conftest import PYTHON, REPO, small_overrides

QUICKSTART = REPO / "configs/quickstart.yaml"
DETERMINISTIC = ["train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "activation_rate",
                 "threshold", "samples_forward", "samples_backward", "flops", "lr"]


class Crash(Exception):
    pass


def _cfg(out, **extra):
    return load_config(QUICKSTART, small_overrides(out, **extra))


def test_run_writes_metrics_config_and_loadable_checkpoints(tmp_path):
    result = run(_cfg(tmp_path / "run", **{"ast.strategy": "reforward"}))
    out = tmp_path / "run"
    df = pd.read_parquet(out / "metrics.parquet")
    assert list(df.columns) == METRICS_SCHEMA.names
    assert df["epoch"].tolist() == [1, 2]
    assert set(df["energy_source"]) == {"model"}
    assert (df["energy_j"] > 0).all() and (df["train_time_s"] > 0).all()
    assert df["time_s"].is_monotonic_increasing
    saved = load_config(out / "config.yaml")
    assert saved.ast.strategy == "reforward" and saved.dataset.type == "synthetic"
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(out / name, weights_only=True)
        assert {"model", "optimizer", "controller", "strategy", "rng", "epoch"} <= set(ckpt)
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    assert result.stopped == "completed"


def test_sparse_epoch_backward_shapes_are_bounded_by_the_buckets(tmp_path):
    """A real reforward epoch: every training forward (the backward batch) has one of at
    most ast.reforward.shape_buckets + 1 sizes (the epoch's short last batch is capped at its size)."""
    from astray.engine.trainer import Trainer

    cfg = _cfg(tmp_path / "r", **{"ast.strategy": "reforward", "ast.reforward.shape_buckets": 4,
                                  "ast.target_activation": 0.3, "training.epochs": 3})
    trainer = Trainer(cfg, tmp_path / "r", torch.device("cpu"), resume=False)
    sizes: list[int] = []
    trainer.model.register_forward_pre_hook(
        lambda _m, args: sizes.append(args[0].shape[0]) if torch.is_grad_enabled() else None)
    trainer.run_epoch(0, sparse=False)
    for epoch in (1, 2):
        sizes.clear()
        work = trainer.run_epoch(epoch, sparse=True)
        assert len(set(sizes)) <= 4 + 1, sorted(set(sizes))
        assert all(n % 8 == 0 for n in sizes[:-1])  # quantum ceil(32 / 4); the last batch may be short
        assert work.backward == sum(sizes)


def test_precise_bn_uses_at_most_its_share_of_a_small_training_set(tmp_path):
    """1,024 recalibration forwards on a 165-image training split would cost more than a
    forward epoch; ast.bn_recalibration_fraction (0.1) caps them at ceil(0.1 * 165) = 17."""
    rows = run(_cfg(tmp_path / "r", **{"ast.strategy": "stale", "training.epochs": 2,
                                       "ast.target_activation": 0.3})).rows
    assert rows[1]["samples_total"] == 165
    assert rows[1]["samples_forward"] == rows[1]["samples_backward"] + 17


@pytest.mark.parametrize("strategy", ["reforward", "stale"])
def test_sparse_strategies_execute_less_work_than_dense(tmp_path, strategy):
    rows = run(_cfg(tmp_path / strategy, **{"ast.strategy": strategy, "training.epochs": 3,
                                           "ast.target_activation": 0.3, "ast.bn_recalibration_samples": 64,
                                               "ast.bn_recalibration_fraction": 1.0})).rows
    dense_epoch, sparse = rows[0], rows[1:]
    assert dense_epoch["strategy"] == "dense" and dense_epoch["samples_backward"] >= dense_epoch["samples_total"]
    for r in sparse:
        assert r["strategy"] == strategy
        assert r["samples_backward"] < 0.6 * r["samples_total"]
        assert r["flops"] < 0.8 * r["flops_dense"]
    # Stale trains a biased subset: precise BN's 64 forwards after each sparse epoch are
    # executed work, and counted. Reforward's scoring forwards see whole batches and keep
    # the running statistics themselves: no recalibration.
    if strategy == "stale":  # nothing unselected is even loaded
        assert all(r["samples_forward"] == r["samples_backward"] + 64 for r in sparse)
    else:  # every sample is scored, only the selected ones go backward
        assert all(r["samples_forward"] == r["samples_total"] + r["samples_backward"] for r in sparse)


@pytest.mark.parametrize("strategy,workers", [("stale", 0), ("reforward", 0), ("stale", 2)])
def test_resume_after_a_crash_reproduces_the_uninterrupted_run(tmp_path, strategy, workers):
    """Also with loader workers, on augmented digits: the run's one loader keeps its
    workers across epochs, and augmentation seeded per sample makes a resumed run draw
    what an uninterrupted one draws."""
    extra = {"ast.strategy": strategy, "training.epochs": 4, "dataset.num_workers": workers}
    if workers:
        extra.update({"dataset.type": "digits", "dataset.num_classes": 10, "training.batch_size": 128})
    full = run(_cfg(tmp_path / "full", **extra)).rows

    def crash_after_two(row, out, **_):
        if row["epoch"] == 2:
            raise Crash()

    cfg = _cfg(tmp_path / "split", **extra)
    with pytest.raises(Crash):
        run(cfg, report=crash_after_two)
    assert [r["epoch"] for r in read_metrics(tmp_path / "split/metrics.parquet")] == [1, 2]
    resumed = run(cfg, resume=True).rows
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(full[2:], resumed[2:]):
        assert {k: a[k] for k in DETERMINISTIC} == {k: b[k] for k in DETERMINISTIC}


def test_final_dense_fraction_and_warmup_epochs(tmp_path):
    rows = run(_cfg(tmp_path / "r", **{"ast.strategy": "stale", "training.epochs": 4, "ast.warmup_epochs": 1,
                                      "ast.final_dense_fraction": 0.25})).rows
    assert [r["strategy"] for r in rows] == ["dense", "stale", "stale", "dense"]


def test_gradient_accumulation_and_early_stop(tmp_path):
    result = run(_cfg(tmp_path / "r", **{"ast.strategy": "dense", "training.grad_accum_steps": 2,
                                        "training.epochs": 8, "training.early_stop_patience": 1,
                                        "training.lr": 1e-9}))
    # With a learning rate of ~0 validation accuracy soon stops improving.
    accs = [r["val_acc"] for r in result.rows]
    assert result.stopped == "early_stop"
    assert accs[-1] <= max(accs[:-1])
    assert all(accs[i] > max(accs[:i]) for i in range(1, len(accs) - 1))


def test_max_minutes_stops_mid_run_and_saves_no_unfinished_epoch(tmp_path):
    result = run(_cfg(tmp_path / "r", **{"training.epochs": 50, "training.max_minutes": 0.0001}))
    assert result.stopped == "max_minutes"
    assert len(result.rows) == 1
    assert not (tmp_path / "r/last.pt").exists()  # the only epoch was cut short


def test_resume_after_a_max_minutes_stop_trains_the_cut_epoch_whole(tmp_path):
    out = tmp_path / "r"
    run(_cfg(out, **{"ast.strategy": "dense", "training.epochs": 2}))
    # The budget counts the time already spent: the resumed run stops in epoch 3's first step.
    cut = run(_cfg(out, **{"ast.strategy": "dense", "training.epochs": 4, "training.max_minutes": 0.0001}),
              resume=True)
    assert cut.stopped == "max_minutes" and cut.rows[-1]["epoch"] == 3
    assert cut.rows[-1]["samples_backward"] < cut.rows[-1]["samples_total"]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    rows = run(_cfg(out, **{"ast.strategy": "dense", "training.epochs": 4}), resume=True).rows
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[2]["samples_backward"] >= rows[2]["samples_total"]  # epoch 3 trained in full


@pytest.mark.slow
def test_quickstart_dense_reaches_95_percent(tmp_path):
    cfg = load_config(QUICKSTART, ["ast.strategy=dense", f"logging.output_dir={tmp_path / 'q'}"])
    rows = run(cfg).rows
    assert rows[-1]["val_acc"] > 0.95


def test_divergence_raises_and_keeps_finished_epochs(tmp_path):
    from astray.errors import TrainingDiverged

    cfg = _cfg(tmp_path / "r", **{"ast.strategy": "dense", "training.epochs": 3})
    run(cfg)  # three good epochs, then a resumed run with a huge learning rate
    cfg2 = _cfg(tmp_path / "r", **{"ast.strategy": "dense", "training.epochs": 5, "training.lr": 1e6})
    with pytest.raises(TrainingDiverged, match="non-finite"):
        run(cfg2, resume=True)
    assert [r["epoch"] for r in read_metrics(tmp_path / "r/metrics.parquet")] == [1, 2, 3]


@pytest.mark.slow
def test_compiled_model_trains_and_checkpoints_plain_weights(tmp_path):
    """training.compile: the compiled model trains and evaluates, and the checkpoint holds
    the plain module's weights, so an uncompiled run resumes from it (compiling on 2 CPU
    cores takes most of this test's minute)."""
    out = tmp_path / "c"
    rows = run(_cfg(out, **{"ast.strategy": "dense", "training.epochs": 1, "training.compile": "true"})).rows
    assert math.isfinite(rows[0]["train_loss"]) and rows[0]["val_acc"] > 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in ckpt["model"])
    resumed = run(_cfg(out, **{"ast.strategy": "dense", "training.epochs": 2}), resume=True).rows
    assert [r["epoch"] for r in resumed] == [1, 2]


@pytest.mark.parametrize("strategy", ["reforward", "stale"])
def test_steps_parquet_traces_the_controller(tmp_path, strategy):
    """Every steps_every-th step (and, in stale mode, plan window) with the controller's
    state; a resumed run keeps the trace of the epochs before the crash, once."""
    extra = {"ast.strategy": strategy, "training.epochs": 3, "logging.steps_every": 2}
    rows = run(_cfg(tmp_path / "r", **extra)).rows
    steps = pd.read_parquet(tmp_path / "r" / "steps.parquet")
    assert list(steps.columns) == ["epoch", "step", "progress", "source", "activation", "threshold", "error",
                                   "integral", "loss", "lr"]
    trained = steps[steps.source == "step"]
    assert sorted(set(trained.epoch)) == [1, 2, 3]
    for _, epoch_rows in trained.groupby("epoch"):  # every 2nd step, and the epoch's last
        assert (epoch_rows.step.iloc[:-1] % 2 == 0).all() and epoch_rows.step.is_monotonic_increasing
    assert trained.progress.is_monotonic_increasing and trained.loss.notna().all() and (trained.lr > 0).all()
    # The last trace row of each epoch holds the threshold the epoch ended with (reforward
    # moves it every step, so its epoch's last step must be traced; stale, its last plan row).
    for r in rows:
        last = steps[steps.epoch == r["epoch"]].sort_values("progress").iloc[-1]
        assert last.threshold == pytest.approx(r["threshold"])
    if strategy == "stale":  # its controller moves while planning: plan rows, sparse epochs only
        plans = steps[steps.source == "plan"]
        assert sorted(set(plans.epoch)) == [2, 3] and plans.loss.isna().all()
        assert plans.activation.between(0, 1).all()
    else:  # reforward: the trained share of each sparse step is what the controller holds
        sparse = trained[trained.epoch > 1]
        assert abs(sparse.activation.mean() - 0.3) < 0.2 and not sparse.error.isna().any()

    def crash_after_two(row, out, **_):
        if row["epoch"] == 2:
            raise Crash()

    with pytest.raises(Crash):
        run(_cfg(tmp_path / "s", **extra), report=crash_after_two)
    run(_cfg(tmp_path / "s", **extra), resume=True)
    resumed = pd.read_parquet(tmp_path / "s" / "steps.parquet")
    assert not resumed.duplicated(["epoch", "source", "step"]).any()
    pd.testing.assert_frame_equal(resumed[["epoch", "step", "source"]], steps[["epoch", "step", "source"]])


def test_tensorboard_events_hold_the_epochs_the_step_trace_and_the_config(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    rows = run(_cfg(out, **{"ast.strategy": "reforward", "training.epochs": 2, "logging.tensorboard": "true",
                            "logging.steps_every": 2})).rows
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    acc = events.Scalars("epoch/val_acc")
    assert [e.step for e in acc] == [1, 2]
    assert [e.value for e in acc] == pytest.approx([r["val_acc"] for r in rows], rel=1e-6)
    steps = pd.read_parquet(out / "steps.parquet")
    assert len(events.Scalars("step/threshold")) == len(steps)
    assert {"step/loss", "step/lr", "step/activation"} <= set(tags["scalars"])
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "strategy: reforward" in config_text


def test_a_missing_tracker_extra_is_one_line_naming_it(tmp_path):
    """tensorboard made unimportable (None in sys.modules is how Python spells 'not installed')."""
    code = ("import sys; sys.modules['tensorboard'] = None; from astray.cli.train import main; "
            f"sys.exit(main(['{REPO / 'configs/quickstart.yaml'}', '--set', 'logging.tensorboard=true', "
            f"'--set', 'logging.output_dir={tmp_path / 'x'}']))")
    proc = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "pip install 'astray[tensorboard]'" in proc.stderr
    assert not (tmp_path / "x").exists()  # nothing written


class _PermutedLabels(torch.utils.data.Dataset):
    """A split whose labels are permuted among its samples: the same images, wrong answers."""

    def __init__(self, split, seed: int = 0) -> None:
        self.split = split
        self.order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed)).tolist()

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i):
        image, _, index = self.split[i]
        return image, self.split[self.order[i]][1], index


def test_permuting_the_test_labels_selects_the_same_epoch_and_checkpoint(tmp_path):
    """Model selection never sees the test split: with its labels scrambled, the run trains
    the same, validates the same, selects the same epoch and writes the same best.pt;
    only the test columns move."""
    from astray.engine.trainer import Trainer
    from astray.sweep.store import trial_summary

    def fit(name, permute):
        cfg = _cfg(tmp_path / name, **{"training.epochs": 4, "ast.strategy": "reforward"})
        trainer = Trainer(cfg, tmp_path / name, torch.device("cpu"), resume=False)
        if permute:
            loader = trainer.test_loader
            trainer.test_loader = torch.utils.data.DataLoader(_PermutedLabels(trainer.data.test),
                                                              batch_size=loader.batch_size, sampler=loader.sampler)
        return trainer.fit().rows

    plain, permuted = fit("plain", False), fit("permuted", True)
    for a, b in zip(plain, permuted):
        assert {k: a[k] for k in DETERMINISTIC} == {k: b[k] for k in DETERMINISTIC}
    assert [r["test_acc"] for r in plain] != [r["test_acc"] for r in permuted]
    chosen = [trial_summary("t", rows)["selected_epoch"] for rows in (plain, permuted)]
    assert chosen[0] == chosen[1]
    best = [torch.load(tmp_path / n / "best.pt", weights_only=True) for n in ("plain", "permuted")]
    assert best[0]["epoch"] == best[1]["epoch"] == chosen[0]
    assert all(torch.equal(best[0]["model"][k], best[1]["model"][k]) for k in best[0]["model"])


def test_reforward_scores_at_its_scale_and_counts_those_flops(tmp_path):
    """ast.reforward.score_scale=0.5 on 16 px images: every no-grad scoring forward sees
    8 px, the training forwards 16 px, and metrics.parquet counts the scoring forwards at
    what an 8 px forward of the model costs."""
    from astray.engine.flops import measure_forward_flops, measure_sample_flops
    from astray.engine.trainer import Trainer

    cfg = _cfg(tmp_path / "s", **{"ast.strategy": "reforward", "ast.reforward.score_scale": 0.5,
                                  "ast.target_activation": 0.3, "training.epochs": 2})
    trainer = Trainer(cfg, tmp_path / "s", torch.device("cpu"), resume=False)
    example = trainer.data.train[0][0]
    assert trainer.sample_flops.scoring == pytest.approx(
        measure_forward_flops(trainer.model, torch.nn.functional.interpolate(example[None], size=(8, 8))[0]))
    # Not s² = 0.25 here: at 8 px the deepest stages of test_resnet are already 1 × 1.
    assert trainer.sample_flops.scoring < 0.5 * measure_sample_flops(trainer.model, example).forward
    sizes: list[tuple[tuple[int, ...], bool, int]] = []
    trainer.model.register_forward_pre_hook(lambda _m, args: sizes.append((tuple(args[0].shape[-2:]),
                                                                           torch.is_grad_enabled(), args[0].shape[0])))
    trainer.run_epoch(0, sparse=False)
    assert {s for s, _, _ in sizes} == {(16, 16)}
    sizes.clear()
    work = trainer.run_epoch(1, sparse=True)
    scoring = sum(n for s, grad, n in sizes if not grad and s == (8, 8))
    assert scoring == work.scored == len(trainer.data.train)
    assert {s for s, grad, _ in sizes if grad} == {(16, 16)}  # training forwards: full size
    # The other no-grad forwards are precise BN's, at full size: the statistics came from a biased subset.
    recalibration = sum(n for s, grad, n in sizes if not grad and s == (16, 16))
    assert recalibration == trainer.recalibration_size() > 0
    assert work.forward == work.scored + work.backward + recalibration

    run(_cfg(tmp_path / "r", **{"ast.strategy": "reforward", "ast.reforward.score_scale": 0.5,
                                "ast.target_activation": 0.3, "training.epochs": 2}))
    dense, sparse = read_metrics(tmp_path / "r" / "metrics.parquet")
    assert dense["samples_scored"] == 0 and sparse["samples_scored"] == sparse["samples_total"]
    per = trainer.sample_flops
    assert sparse["flops"] == pytest.approx(per.executed(int(sparse["samples_forward"]),
                                                         int(sparse["samples_backward"]), int(sparse["samples_scored"])))
    full = per.forward * sparse["samples_forward"] + per.backward * sparse["samples_backward"]
    assert sparse["flops"] < full  # the scores were not counted at full size


def test_threads_follow_the_cpus_the_run_may_use(tmp_path):
    """Started by hand under `taskset -c 0` (no OMP_NUM_THREADS), a run uses 1 intra-op
    thread, not one per core of the machine, says so on its first line and records it;
    training.threads overrides it."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}

    def train(out, *extra: str) -> subprocess.CompletedProcess:
        sets = [a for o in small_overrides(out, **{"training.epochs": 1}) + list(extra) for a in ("--set", o)]
        proc = subprocess.run(["taskset", "-c", "0", PYTHON, "-m", "astray.train", str(QUICKSTART), *sets],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc

    proc = train(tmp_path / "a")
    first = next(line for line in proc.stdout.splitlines() if line.startswith("astray "))
    assert "1 thread(s) each (1 CPUs in this process's affinity)" in first
    assert [r["threads"] for r in read_metrics(tmp_path / "a" / "metrics.parquet")] == [1]
    assert "2 thread(s) each (training.threads)" in train(tmp_path / "b", "training.threads=2").stdout
    assert [r["threads"] for r in read_metrics(tmp_path / "b" / "metrics.parquet")] == [2]
