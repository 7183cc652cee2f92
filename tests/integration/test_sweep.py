"""Real Ray sweeps on the CPU: store contents, DDP trials, failures as data, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as pads
import pytest

from astray.sweep.checkpoints import deployable_checkpoint, latest_checkpoint
from astray.sweep.ray_adapter import CHECKPOINTS_KEPT
from astray.sweep.store import read_epochs, read_steps, read_trials
from tests.conftest import PYTHON, REPO
from tests.helpers import wandb_records

pytestmark = pytest.mark.slow


def _sweep_args(results: os.PathLike, name: str, **extra: object) -> list[str]:
    values: dict[str, object] = {
        "model.name": "test_resnet", "dataset.type": "synthetic", "dataset.num_classes": 4,
        "dataset.image_size": 16, "dataset.synthetic_samples": 192, "training.batch_size": 32,
        "training.epochs": 2, "training.lr": 0.05, "training.device": "cpu",
        "search.num_samples": 2, "search.max_concurrent": 2, "search.sampler": "random",
        "search.baselines": "{dense_budgets: [1.0]}", "search.repeats": 1, "sweep.name": name, "sweep.results_dir": str(results),
    }
    values.update(extra)
    args = [str(REPO / "configs/quickstart.yaml")]
    for k, v in values.items():
        args += ["--set", f"{k}={v}"]
    return args


def _tune(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([PYTHON, "-m", "astray.tune", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_sweep_fills_the_store(tmp_path):
    proc = _tune(_sweep_args(tmp_path, "s4", **{"search.num_samples": 4}))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    root = tmp_path / "s4"
    trials = read_trials(root).to_pandas()
    assert len(trials) == 5 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"completed"}
    assert trials["is_baseline"].sum() == 1
    base = trials[trials["is_baseline"]].iloc[0]
    assert json.loads(base["config_json"])["ast"]["strategy"] == "dense"
    searched = trials[~trials["is_baseline"]]
    assert all(json.loads(c)["ast"]["strategy"] == "stale" for c in searched["config_json"])
    for key in ("ast.kp", "ast.ki", "ast.target_activation", "ast.entropy_weight"):
        assert trials[key].notna().all()
        assert all(json.loads(c)["ast"][key.split(".")[1]] == pytest.approx(v)
                   for c, v in zip(trials["config_json"], trials[key]))
    assert (trials["epochs"] == 2).all() and (trials["energy_source"] == "model").all()
    assert (searched["flops"] < base["flops"]).all()  # sparse trials executed less work
    assert trials["node_id"].notna().all()
    # The main job ends with its result: the report is written and its path printed; the
    # console is astray's own lines, not Ray's status table (that takes -v).
    assert f"[astray] report: {(root / 'report' / 'report.html').resolve()}" in proc.stdout
    assert (root / "report" / "report.html").stat().st_size > 1000
    assert "Trial status" not in proc.stdout and "== Status ==" not in proc.stdout
    # Every trial's step trace lands in the store's steps/ dataset.
    steps = read_steps(root).to_pandas()
    assert set(steps["trial_id"]) == set(trials["trial_id"])
    assert set(steps["epoch"]) == {1, 2} and steps["loss"][steps["source"] == "step"].notna().all()

    epochs = read_epochs(root).to_pandas()
    assert len(epochs) == 10 and not epochs.duplicated(["trial_id", "epoch"]).any()
    for tid, group in epochs.groupby("trial_id"):
        row = trials.set_index("trial_id").loc[tid]
        assert group["energy_j"].sum() == pytest.approx(row["energy_j"])
        assert group["val_acc"].max() == pytest.approx(row["val_acc"])

    manifest = json.loads((root / "sweep.json").read_text())
    assert manifest["config"]["search"]["num_samples"] == 4
    assert manifest["libraries"]["ray"] and manifest["libraries"]["torch"] and manifest["astray_version"]
    assert "cpu_count" in manifest["hardware"] and manifest["study_name"].startswith("astray-s4-")

    # Every reader users reach for reads the store as it is.
    assert len(pd.read_parquet(root / "trials")) == 5
    assert pads.dataset(root / "epochs").count_rows() == 10
    assert duckdb.sql(f"select count(*) from read_parquet('{root}/trials/*.parquet')").fetchall()[0][0] == 5
    assert pl.read_parquet(f"{root}/epochs/*.parquet").height == 10
    assert "[astray] trials 5/5 done" in proc.stdout
    assert not list(root.rglob(".*.tmp-*"))

    again = _tune(_sweep_args(tmp_path, "s4", **{"search.num_samples": 4}))
    assert again.returncode == 2 and "--resume" in again.stderr
    assert len(read_trials(root)) == 5


def test_two_worker_ddp_trial(tmp_path):
    proc = _tune(_sweep_args(tmp_path, "ddp", **{"search.num_samples": 1, "search.baselines": "{}",
                                                  "search.max_concurrent": 1, "resources.workers_per_trial": 2,
                                                  "training.epochs": 3}))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = read_trials(tmp_path / "ddp").to_pandas()
    assert len(trials) == 1 and trials["status"][0] == "completed" and trials["epochs"][0] == 3
    assert "2 process(es)" in proc.stdout  # the engine ran under DDP with two ranks
    epochs = read_epochs(tmp_path / "ddp").to_pandas()
    assert epochs["epoch"].tolist() == [1, 2, 3]
    # Ray Train keeps a bounded number of the trial's checkpoints (the 2 best by
    # checkpoint_score, and the newest), the newest and the best.pt among them.
    (train_run,) = (tmp_path / "ddp" / "ray").glob(f"train-{trials['trial_id'][0]}")
    kept = sorted(d for d in train_run.glob("checkpoint_*") if d.is_dir())
    assert 1 <= len(kept) <= CHECKPOINTS_KEPT + 1, kept
    assert latest_checkpoint(tmp_path / "ddp" / "ray", trials["trial_id"][0]) in kept
    best = deployable_checkpoint(tmp_path / "ddp" / "ray", trials["trial_id"][0])
    assert best in kept and (best / "best.pt").is_file()


def test_diverging_and_failing_trials_are_recorded_and_the_sweep_goes_on(tmp_path):
    proc = _tune(_sweep_args(tmp_path, "div", **{
        "search.num_samples": 1, "search.space": "{training.lr: {type: choice, values: [10000.0]}}",
        "sweep.max_failures": 0}))
    # The baseline keeps the base learning rate; the searched trial gets 1e4 and diverges.
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = read_trials(tmp_path / "div").to_pandas().set_index("is_baseline")
    assert trials.loc[True, "status"] == "completed"
    assert trials.loc[False, "status"] == "diverged"
    assert "non-finite" in trials.loc[False, "error"]
    assert "(1 failed)" in proc.stdout
    lrs = {b: json.loads(c)["training"]["lr"] for b, c in zip(trials.index, trials["config_json"])}
    assert lrs == {True: 0.05, False: 10000.0} and trials.loc[True, "training.lr"] == 0.05


def test_bad_search_space_fails_before_ray_starts(tmp_path):
    proc = _tune(_sweep_args(tmp_path, "bad", **{
        "search.space": "{ast.target_activation: {type: uniform, low: 0.5, high: 1.5}}"}), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "ast.target_activation" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "bad").exists()


def wait_for_epochs(driver: subprocess.Popen, root: os.PathLike, n: int, timeout_s: float = 300) -> pd.DataFrame:
    """Poll a running sweep's store until ``n`` epoch rows are in; return them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and driver.poll() is None:
        if (root / "epochs").exists() and len(read_epochs(root)) >= n:
            return read_epochs(root).to_pandas()
        time.sleep(0.5)
    pytest.fail(f"fewer than {n} epochs reached the store (sweep exit code {driver.poll()})")


def _trial_processes(session: int) -> list[int]:
    """Tune trial workers of the sweep whose driver leads process session ``session`` only."""
    out = subprocess.run(["pgrep", "-s", str(session), "-f", "ray::ImplicitFunc"], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.parametrize("max_failures, final_status", [(1, "completed"), (0, "error")])
def test_killed_trial_is_retried_from_its_checkpoint_or_recorded(tmp_path, max_failures, final_status):
    # 1,536 samples: epochs of about a second, so the kill lands mid-training (with 192, the
    # trial sometimes finished all 6 epochs before the kill reached it).
    args = _sweep_args(tmp_path, "kill", **{"search.num_samples": 1, "search.baselines": "{}",
                                             "search.max_concurrent": 1, "training.epochs": 6,
                                             "dataset.synthetic_samples": 1536,
                                             "sweep.max_failures": max_failures})
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    driver = subprocess.Popen([PYTHON, "-m", "astray.tune", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    root = tmp_path / "kill"
    before = wait_for_epochs(driver, root, 2)
    pids = _trial_processes(driver.pid)
    assert pids, "trial process not found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # the trial's worker dies mid-training, as on node loss
    out, _ = driver.communicate(timeout=400)
    assert driver.returncode == 0, out[-3000:]
    trial = read_trials(root).to_pandas().iloc[0]
    assert trial["status"] == final_status
    epochs = read_epochs(root).to_pandas()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    if final_status == "completed":
        assert epochs["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    else:
        assert trial["error"]
    # Epochs recorded before the kill were neither lost nor re-trained.
    key = ["epoch", "train_time_s", "val_acc"]
    kept = epochs[epochs["epoch"].isin(before["epoch"])][key].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before[key].reset_index(drop=True))


def test_a_trial_no_node_can_hold_fails_at_once_with_one_line(tmp_path):
    """The imagenet-style request (a GPU per worker) on this CPU-only machine: before, Ray
    printed 'No available node types can fulfill resource request' for ever."""
    started = time.monotonic()
    proc = _tune(_sweep_args(tmp_path, "nogpu", **{"resources.gpus_per_worker": 1}), timeout=180)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()  # Ray's own start-up warnings may come first
    ours = [line for line in lines if "resources." in line]
    assert ours == lines[-1:] and "resources.gpus_per_worker" in ours[0] and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 120
    assert not (tmp_path / "nogpu" / "trials").exists()  # nothing was written


def test_sweep_loggers_write_tensorboard_mlflow_and_offline_wandb(tmp_path):
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env_extra = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    args = _sweep_args(tmp_path, "logs", **{"search.num_samples": 1, "search.max_concurrent": 1,
                                           "sweep.loggers": "[tensorboard, mlflow, wandb]"})
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **env_extra)
    proc = subprocess.run([PYTHON, "-m", "astray.tune", *args, "--no-report"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    root = tmp_path / "logs"
    trials = read_trials(root).to_pandas().set_index("trial_id")
    assert len(trials) == 2

    # TensorBoard: one event file per trial in its Ray folder, holding the reported val_acc.
    event_dirs = {p.parent for p in (root / "ray").rglob("events.out.tfevents*")}
    assert len(event_dirs) == 2
    for d in event_dirs:
        acc = EventAccumulator(str(d), size_guidance={"scalars": 0})
        acc.Reload()
        assert any(tag.endswith("val_acc") for tag in acc.Tags()["scalars"])

    # MLflow: a SQLite store in the sweep's store; one run per trial, with the baseline flag.
    mlflow.set_tracking_uri(f"sqlite:///{(root / 'mlflow.db').resolve()}")
    runs = mlflow.search_runs(experiment_names=["logs"])
    assert len(runs) == 2
    assert sorted(runs["params.baseline_kind"].fillna("")) == ["", "dense"]
    assert sorted(runs["tags.astray.is_baseline"]) == ["false", "true"]
    assert set(runs["tags.astray.sweep"]) == {"logs"}
    assert sorted(runs["metrics.val_acc"]) == pytest.approx(sorted(trials["val_acc"]))

    # W&B, offline: one run per trial under <store>/wandb; its transaction log holds the
    # trial's config (baseline flags included) and its history the reported val_acc.
    offline = sorted((root / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 2
    kinds, accs = set(), set()
    for path in offline:
        records = wandb_records(path)
        config = {u.key: u.value_json for r in records if r.WhichOneof("record_type") == "config"
                  for u in r.config.update}
        kinds.add(json.loads(config["baseline_kind"]))
        history = [{i.key or "/".join(i.nested_key): i.value_json for i in r.history.item}
                   for r in records if r.WhichOneof("record_type") == "history"]
        accs.add(max(float(h["val_acc"]) for h in history if "val_acc" in h))
    assert kinds == {"", "dense"}
    assert sorted(accs) == pytest.approx(sorted(trials["val_acc"]))


def test_confirmation_trains_fresh_seeds_of_the_headline_and_its_dense_budgets(tmp_path):
    # The searched configurations train dense too (strategy dense), so the headline one
    # lands on the dense frontier's range and there is always something to confirm.
    args = _sweep_args(tmp_path, "conf", **{"search.repeats": 2, "search.confirm": 2, "ast.strategy": "dense",
                                            "search.baselines": "{dense_budgets: [1.0, 0.5]}"})
    proc = _tune(args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    root = tmp_path / "conf"
    trials = read_trials(root).to_pandas()
    confirm = trials[trials["search_phase"] == "confirmation"]
    picked = json.loads((root / "sweep.json").read_text())["confirmation"]
    head, *dense = picked["configs"]
    assert head.startswith("search-") and sorted(dense) == ["dense@0.5", "dense@1"]
    assert len(trials) == (2 + 2) * 2 + 3 * 2 and set(trials["status"]) == {"completed"}
    assert sorted(confirm["config_id"]) == sorted([head, head, *dense, *dense])
    assert set(confirm["replicate"]) == {2, 3} and set(confirm["seed"]) == {2, 3}  # training.seed 0 + 2, + 3
    assert set(trials[trials["search_phase"] != "confirmation"]["seed"]) == {0, 1}
    assert f"[astray] confirming {head} against" in proc.stdout
    # Optuna was told the two searched configurations, never a confirmation trial.
    import optuna  # noqa: PLC0415 - the journal is only read here

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(root / "optuna" / "journal.log")))
    (study,) = optuna.get_all_study_summaries(storage)
    assert study.n_trials == 2
    md = (root / "report" / "report.md").read_text()
    assert "never used in the search" in md.split("## Trials")[0] or "confirmation not shown" in md.lower()
    # A resumed finished sweep confirms nothing twice.
    again = _tune(args + ["--resume"])
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(read_trials(root).to_pandas()) == len(trials)
