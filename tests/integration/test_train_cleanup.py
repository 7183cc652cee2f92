"""Multi-worker trials that Tune stops leave no workers' placement group behind.

A Ray Train trial stopped by Tune (early stopping, a failure) loses its controller without
a shutdown, and the workers' placement group stays reserved until the driver ends; on a
2-CPU node two such leaks held every CPU and an early-stopped DDP sweep waited for ever
(docs/design.md §9). ``TrainGroupCleaner`` removes the group. The script runs real Tune
trials, each a real 2-worker ``TorchTrainer``, stopped at their first report.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import PYTHON, REPO

pytestmark = pytest.mark.slow

SCRIPT = '''
import json, sys, time
import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from astray.config.sweep import ResourcesConfig
from astray.sweep import ray_adapter


def loop(config):
    import ray.train
    while True:
        ray.train.report({"step": 1, ray_adapter.TRAIN_PLACEMENT_GROUP: ray_adapter.current_placement_group_id()})
        time.sleep(0.5)


def trial(config, storage):
    ray_adapter.run_torch_trainer(loop, {}, ResourcesConfig(workers_per_trial=2, cpus_per_worker=0.5),
                                  name=f"t-{tune.get_context().get_trial_id()}", storage_path=storage)


class StopAtFirst(FIFOScheduler):
    def on_trial_result(self, tune_controller, trial, result):
        return TrialScheduler.STOP


storage, clean = sys.argv[1], sys.argv[2] == "clean"
ray.init(address="local", num_cpus=2, log_to_driver=False)
tune.Tuner(tune.with_resources(tune.with_parameters(trial, storage=storage), {"CPU": 0, "memory": 1}),
           tune_config=tune.TuneConfig(num_samples=2, scheduler=StopAtFirst(), max_concurrent_trials=2),
           run_config=tune.RunConfig(storage_path=storage, verbose=0,
                                     callbacks=[ray_adapter.TrainGroupCleaner()] if clean else [])).fit()
time.sleep(3)
held = [v for v in ray.util.placement_group_table().values()
        if v["state"] != "REMOVED" and any("CPU" in b for b in v["bundles"].values())]
print("HELD", json.dumps(len(held)))
'''


def _held_after_stops(tmp_path, mode: str) -> int:
    script = tmp_path / "stop_two.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([PYTHON, str(script), str(tmp_path / mode), mode], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    held = [ln for ln in proc.stdout.splitlines() if ln.startswith("HELD ")]
    assert proc.returncode == 0 and held, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(held[-1].split(" ", 1)[1])


def test_stopped_two_worker_trials_release_their_workers_placement_groups(tmp_path):
    assert _held_after_stops(tmp_path, "clean") == 0


def test_without_the_cleaner_ray_keeps_them_reserved(tmp_path):
    """The premise of the cleaner: if this fails, Ray frees the groups itself and
    ``TrainGroupCleaner`` can go."""
    assert _held_after_stops(tmp_path, "leak") == 2
