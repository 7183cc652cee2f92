"""A sweep that is killed and resumed, again and again, ends with exactly its planned trials.

The driver is SIGKILLed (with its process group: the local Ray instance dies with it) at
the moments a pre-empted driver node can die: in its first seconds, while trials start or
wait, just after a trial finished, while the report is written. Trial workers are killed
mid-training in a second test. Each test then checks the store against the plan: every
planned (configuration, replicate) exactly once, each with exactly its own epochs, and
the Optuna journal telling each searched configuration once, with the store's means.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import threading
import time
import wsgiref.util
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import optuna
import optuna_dashboard
import pandas as pd
import pytest

from astray.sweep.store import read_epochs, read_trials
from tests.conftest import PYTHON, REPO
from tests.integration.test_sweep import _sweep_args, _trial_processes

pytestmark = pytest.mark.slow

BASELINES = "{dense_budgets: [1.0, 0.5], random: [0.3]}"
EPOCHS = {"dense@1": 2, "dense@0.5": 1, "random@0.3": 2, "search-0000": 2, "search-0001": 2}
PLANNED = {(cid, r) for cid in EPOCHS for r in (0, 1)}


class Driver:
    """``astray tune`` in its own process group, its output read line by line."""

    def __init__(self, args: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([PYTHON, "-m", "astray.tune", *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def kill_when(self, hit: Callable[[str], bool], timeout_s: float = 240, sig: int = signal.SIGKILL,
                  group: bool = True) -> bool:
        """Send ``sig`` (to the process group, or the driver alone) at the first line ``hit``
        accepts; False if the run ended first. After a SIGKILL, waits for the driver."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                return False
            self.output.append(line)
            if hit(line):
                (os.killpg if group else os.kill)(self.proc.pid, sig)
                if sig == signal.SIGKILL:
                    self.proc.wait()
                return True
        pytest.fail("no line to kill at within the timeout:\n" + "".join(self.output[-40:]))

    def finish(self, timeout_s: float = 300) -> int:
        """The driver's exit code; past ``timeout_s`` it is killed (with its Ray instance) and
        the test fails with the driver's last lines, which a hung sweep would otherwise hide."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self._drain()
            pytest.fail(f"the driver had not ended after {timeout_s:.0f} s; its last lines:\n"
                        + "".join(self.output[-60:]))
        self._drain()
        return self.proc.returncode

    def _drain(self) -> None:
        try:
            while (line := self.lines.get(timeout=10)) is not None:
                self.output.append(line)
        except queue.Empty:  # a process outside the group still holds the pipe
            pass


def completed_epochs(root: Path) -> pd.DataFrame:
    """Epoch rows of the trials the store has as completed (what must never train again)."""
    if not (root / "trials").is_dir() or not len(read_trials(root)):
        return pd.DataFrame(columns=["trial_id", "epoch", "train_time_s"])
    done = read_trials(root).to_pandas().query("status == 'completed'")["trial_id"]
    epochs = read_epochs(root).to_pandas()
    return epochs[epochs["trial_id"].isin(done)][["trial_id", "epoch", "train_time_s"]]


def assert_exactly_the_plan(root: Path, planned: set[tuple[str, int]] = PLANNED) -> pd.DataFrame:
    trials = read_trials(root).to_pandas()
    keys = list(zip(trials["config_id"], trials["replicate"]))
    assert Counter(keys) == Counter(planned), sorted(keys)
    assert trials["trial_id"].is_unique and set(trials["status"]) == {"completed"}
    epochs = read_epochs(root).to_pandas()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for t in trials.itertuples():
        own = sorted(epochs.loc[epochs["trial_id"] == t.trial_id, "epoch"])
        assert own == list(range(1, EPOCHS[t.config_id] + 1)), (t.trial_id, own)
        assert t.epochs == len(own)
    assert set(epochs["trial_id"]) == set(trials["trial_id"])
    return trials


def assert_journal_matches_the_store(root: Path, trials: pd.DataFrame,
                                     searched: tuple[str, ...] = ("search-0000", "search-0001"),
                                     ) -> optuna.storages.JournalStorage:
    """Each searched configuration told exactly once, with its replicates' means from the
    store; nothing left RUNNING; a failed Optuna trial was never a configuration."""
    manifest = json.loads((root / "sweep.json").read_text())
    journal = manifest["optuna_storage"]["path"]
    assert journal == str((root / "optuna" / "journal.log").resolve())
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    study = optuna.load_study(study_name=manifest["study_name"], storage=storage)
    states = Counter(t.state for t in study.trials)
    assert states[optuna.trial.TrialState.RUNNING] == 0, states
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.user_attrs["config_id"] for t in done) == sorted(searched)
    for t in study.trials:
        if t.state == optuna.trial.TrialState.FAIL:
            assert "config_id" not in t.user_attrs, t  # an orphan: proposed, never trained
    for t in done:
        rows = trials[trials["config_id"] == t.user_attrs["config_id"]]
        assert t.values == pytest.approx([rows["val_acc"].mean(), rows["energy_j"].mean()])
        assert t.params["ast.kp"] == pytest.approx(rows["ast.kp"].iloc[0])
    ops = [json.loads(line) for line in Path(journal).read_text().splitlines() if line.strip()]
    finishes = Counter(op["trial_id"] for op in ops if op["op_code"] == 6)  # SET_TRIAL_STATE_VALUES
    assert set(finishes.values()) <= {1}, finishes
    return storage


def _wsgi_get(app, path: str) -> dict:
    environ: dict = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (path, status, body[:500])
    return json.loads(body)


def _args(tmp_path: Path, name: str, **extra: object) -> list[str]:
    return _sweep_args(tmp_path, name, **{
        "search.num_samples": 2, "search.max_concurrent": 2, "training.epochs": 2, "training.seed": 5,
        "search.baselines": BASELINES, "search.repeats": 2, **extra})


def test_driver_killed_at_every_moment_then_resumed_ends_with_exactly_the_plan(tmp_path):
    args = _args(tmp_path, "chaos")
    root = tmp_path / "chaos"
    kept = pd.DataFrame()
    # Where each driver dies: before any trial ran (Ray has written no experiment state),
    # while the first trials train, and just after a trial finished (its completion is in
    # the store, not yet in Ray's snapshot).
    moments: list[Callable[[str], bool]] = [
        lambda line: "[astray] sweep chaos:" in line,
        lambda line: "] epoch 1/" in line,  # a trial line: "[search-0000 r0] epoch 1/2 ..."
        lambda line: "[astray] trials " in line and " done" in line,
    ]
    for i, hit in enumerate(moments):
        driver = Driver(args + (["--resume"] if i else []))
        killed = driver.kill_when(hit)
        assert killed, "the sweep ended before the kill:\n" + "".join(driver.output[-30:])
        before = completed_epochs(root)
        kept = pd.concat([kept[~kept["trial_id"].isin(before["trial_id"])], before]) if len(kept) else before
    # The last driver dies while it writes the report, after every trial is in.
    driver = Driver(args + ["--resume"])
    killed = driver.kill_when(lambda line: "finished; results in" in line)
    rc = None if killed else driver.finish()
    assert killed or rc == 0, "".join(driver.output[-30:])

    final = Driver(args + ["--resume"])
    assert final.finish() == 0, "".join(final.output[-40:])
    out = "".join(final.output)
    assert "finished; results in" in out and "report.html" in out
    trials = assert_exactly_the_plan(root)
    storage = assert_journal_matches_the_store(root, trials)
    # A trial the store had as completed at a kill was never trained again.
    after = completed_epochs(root).set_index(["trial_id", "epoch"])
    for tid, epoch, seconds in kept.itertuples(index=False):
        assert after.loc[(tid, epoch), "train_time_s"] == seconds, (tid, epoch)

    # Each configuration is what the plan says, whichever driver trained it: baselines
    # and replicates on the shared seeds training.seed + r, dense budgets as shorter runs.
    per_config = trials.groupby("config_id").agg(kind=("baseline_kind", "first"), seeds=("seed", sorted),
                                                 budget=("budget", "first"))
    assert per_config.loc["dense@1"].tolist() == ["dense", [5, 6], 1.0]
    assert per_config.loc["dense@0.5"].tolist() == ["dense", [5, 6], 0.5]
    assert per_config.loc["random@0.3"].tolist() == ["random", [5, 6], 1.0]
    assert all(s == [5, 6] for s in per_config.loc[["search-0000", "search-0001"], "seeds"])
    assert trials["is_baseline"].sum() == 6
    strategies = {c: json.loads(j)["ast"]["strategy"] for c, j in zip(trials["config_id"], trials["config_json"])}
    assert strategies["dense@0.5"] == "dense" and strategies["random@0.3"] == "random"
    assert strategies["search-0000"] == "stale"
    # optuna-dashboard serves the same study from the journal file (its WSGI app, no server).
    manifest = json.loads((root / "sweep.json").read_text())
    assert len(manifest["resumes"]) == 4
    (summary,) = _wsgi_get(optuna_dashboard.wsgi(storage), "/api/studies")["study_summaries"]
    assert summary["study_name"] == manifest["study_name"]
    served = _wsgi_get(optuna_dashboard.wsgi(storage), f"/api/studies/{summary['study_id']}")
    study = optuna.load_study(study_name=manifest["study_name"], storage=storage)
    assert sorted(t["values"] for t in served["trials"] if t["state"] == "Complete") == \
        sorted(t.values for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)


def test_an_interrupted_sweep_names_the_missing_trials_and_resume_trains_exactly_those(tmp_path):
    """Ctrl+C (SIGINT) makes Ray Tune stop its run and return as if it had finished. The
    sweep must then say which planned trials are missing, exit 3 and write no report;
    --resume trains those and nothing else."""
    args = _args(tmp_path, "gap", **{"search.num_samples": 1, "search.baselines": "{dense_budgets: [1.0]}"})
    root = tmp_path / "gap"
    driver = Driver(args)
    assert driver.kill_when(lambda line: "[astray] trials 1/4 done" in line, sig=signal.SIGINT, group=False)
    assert driver.finish() == 3, "".join(driver.output[-40:])
    out = "".join(driver.output)
    (line,) = [ln for ln in driver.output if ln.startswith("astray: ")]
    trials = read_trials(root).to_pandas()
    done = trials.query("status == 'completed'")
    missing = {(cid, r) for cid in ("dense@1", "search-0000") for r in (0, 1)} - set(
        zip(done["config_id"], done["replicate"]))
    assert missing and f"{len(missing)} of 4 planned trials missing" in line and "--resume" in line
    assert all(f"{cid} r{r}" in line for cid, r in missing), line
    assert "finished; results in" not in out and not (root / "report").exists()
    kept = completed_epochs(root)

    final = Driver(args + ["--resume"])
    assert final.finish() == 0, "".join(final.output[-40:])
    started = [ln for ln in final.output if ln.startswith("[astray] resuming sweep gap")]
    assert started and f"{len(missing)} of 4 planned trials to train" in started[0], started
    trials = read_trials(root).to_pandas()
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    after = completed_epochs(root).set_index(["trial_id", "epoch"])
    for tid, epoch, seconds in kept.itertuples(index=False):
        assert after.loc[(tid, epoch), "train_time_s"] == seconds


def test_trial_workers_killed_every_few_seconds_still_complete_every_planned_trial(tmp_path):
    # Epochs of about a second (1,536 samples), so kills land mid-training.
    args = _args(tmp_path, "wchaos", **{"dataset.synthetic_samples": 1536, "sweep.max_failures": 50,
                                         "search.num_samples": 1, "search.baselines": "{dense_budgets: [1.0, 0.5]}"})
    driver = Driver(args)
    rng = random.Random(0)
    kills = trained = 0
    # A kill follows each epoch a trial reports, at a random moment of the next one: paced by
    # the trials' progress, not the clock, so a fast host gets as many kills as a slow one.
    while driver.proc.poll() is None:
        time.sleep(rng.uniform(0.3, 1.5))
        while True:  # what the driver printed so far
            try:
                line = driver.lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                driver.lines.put(None)  # finish() reads to it
                break
            driver.output.append(line)
        epochs = sum("] epoch " in line for line in driver.output)
        if epochs == trained:
            continue
        pids = _trial_processes(driver.proc.pid)
        if pids and driver.proc.poll() is None:
            try:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
                trained = epochs
            except ProcessLookupError:
                pass
    assert driver.finish() == 0, "".join(driver.output[-40:])
    assert kills >= 3, kills
    planned = {(cid, r) for cid in ("dense@1", "dense@0.5", "search-0000") for r in (0, 1)}
    trials = assert_exactly_the_plan(tmp_path / "wchaos", planned)
    assert_journal_matches_the_store(tmp_path / "wchaos", trials, ["search-0000"])
