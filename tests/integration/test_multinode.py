"""A real two-node Ray cluster on this machine, with Ray's token authentication on as
every launch config in clusters/ starts it: a sweep joins it with --address."""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from astray.sweep.store import read_epochs, read_trials
from tests.conftest import PYTHON, REPO
from tests.integration.test_sweep import _sweep_args, wait_for_epochs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """RAY_AUTH_MODE=token on every node and driver, the token in a file (the launch
    configs ship it to ~/.ray/auth_token; here RAY_AUTH_TOKEN_PATH points at it)."""
    from ray._private.authentication_test_utils import reset_auth_token_state
    from ray.cluster_utils import Cluster

    token = tmp_path_factory.mktemp("auth") / "auth_token"
    token.write_text(secrets.token_hex(32))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "token")
        mp.setenv("RAY_AUTH_TOKEN_PATH", str(token))
        mp.delenv("RAY_AUTH_TOKEN", raising=False)
        reset_auth_token_state()
        cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        try:
            yield cluster
        finally:
            cluster.shutdown()
    reset_auth_token_state()


def test_a_driver_without_the_token_is_refused(two_nodes):
    """Authentication is really on: the wrong token does not get a driver in."""
    env = dict(os.environ, RAY_AUTH_TOKEN=secrets.token_hex(32))  # RAY_AUTH_TOKEN outranks the file
    proc = subprocess.run([PYTHON, "-c", f"import ray; ray.init(address={two_nodes.address!r}); print('JOINED')"],
                          env=env, capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "JOINED" not in out, out[-3000:]
    assert "authentication" in out.lower() or "unauthenticated" in out.lower(), out[-3000:]


def _tune_on(cluster, args):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([PYTHON, "-m", "astray.tune", *args, "--address", cluster.address], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_trials_run_on_both_nodes(two_nodes, tmp_path):
    proc = _tune_on(two_nodes, _sweep_args(tmp_path, "mn", **{"search.num_samples": 3, "search.max_concurrent": 2}))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = read_trials(tmp_path / "mn").to_pandas()
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert trials["node_id"].nunique() == 2  # one CPU per node: concurrent trials must land apart
    assert len(read_epochs(tmp_path / "mn")) == 8


def test_two_worker_trial_spreads_over_both_nodes(two_nodes, tmp_path):
    proc = _tune_on(two_nodes, _sweep_args(tmp_path, "mn2", **{
        "search.num_samples": 1, "search.baselines": "{}", "search.max_concurrent": 1,
        "resources.workers_per_trial": 2, "resources.placement_strategy": "STRICT_SPREAD"}))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trial = read_trials(tmp_path / "mn2").to_pandas().iloc[0]
    assert trial["status"] == "completed" and trial["epochs"] == 2
    assert len(trial["node_id"].split(",")) == 2  # rank 0 and rank 1 on different nodes


def test_worker_node_lost_mid_trial_is_retried_on_another_node(tmp_path):
    """A node dies under a running trial: Tune retries it elsewhere from its checkpoint."""
    import pandas as pd
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0})
    node_a = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        env.pop("RAY_ADDRESS", None)
        args = _sweep_args(tmp_path, "loss", **{"search.num_samples": 1, "search.baselines": "{}",
                                                 "search.max_concurrent": 1, "training.epochs": 12,
                                                 "sweep.max_failures": 2})
        driver = subprocess.Popen([PYTHON, "-m", "astray.tune", *args, "--address", cluster.address], cwd=REPO,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        root = tmp_path / "loss"
        # Twelve short epochs: removing a node takes seconds on a busy machine, and the
        # trial must still be running on it when it goes.
        before = wait_for_epochs(driver, root, 2)
        cluster.remove_node(node_a)  # the only node with a CPU: the trial dies with it
        node_b = cluster.add_node(num_cpus=1)  # what an autoscaler would bring up
        out, _ = driver.communicate(timeout=400)
        assert driver.returncode == 0, out[-3000:]
        trial = read_trials(root).to_pandas().iloc[0]
        assert trial["status"] == "completed"
        assert trial["node_id"] == node_b.node_id != node_a.node_id
        epochs = read_epochs(root).to_pandas()
        assert epochs["epoch"].tolist() == list(range(1, 13))
        key = ["epoch", "train_time_s", "val_acc"]
        kept = epochs[epochs["epoch"].isin(before["epoch"])][key].reset_index(drop=True)
        pd.testing.assert_frame_equal(kept, before[key].reset_index(drop=True))
    finally:
        cluster.shutdown()
