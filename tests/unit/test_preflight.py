"""Pre-flight checks a sweep runs on the driver before Ray places any trial."""

from __future__ import annotations

import pytest

from astray.config.sweep import ResourcesConfig, load_sweep_spec
from astray.errors import ConfigError
from astray.sweep.store import ResultStore
from astray.sweep.trial_config import check_before_start, check_data_on_driver, check_trial_fits, resolved_sweep_config
from tests.conftest import REPO

QUICK = str(REPO / "configs/quickstart.yaml")

CPU_NODE = {"CPU": 16.0, "memory": 6.4e10}
GPU_NODE = {"CPU": 16.0, "GPU": 4.0, "memory": 6.4e10}


def test_a_gpu_trial_on_a_cpu_only_cluster_fails_at_once_naming_the_keys():
    """The imagenet config on a machine with no GPU used to print 'No available node types
    can fulfill resource request' for ever."""
    res = ResourcesConfig(workers_per_trial=4, cpus_per_worker=10, gpus_per_worker=1)
    with pytest.raises(ConfigError) as info:
        check_trial_fits(res, [CPU_NODE])
    message = str(info.value)
    assert "\n" not in message
    for key in ("resources.workers_per_trial=4", "resources.gpus_per_worker", "resources.autoscaling"):
        assert key in message
    assert "GPU 0" in message  # what the nodes have


@pytest.mark.parametrize("res,nodes,fits", [
    (ResourcesConfig(workers_per_trial=1, cpus_per_worker=2), [CPU_NODE], True),
    (ResourcesConfig(workers_per_trial=1, cpus_per_worker=32), [CPU_NODE], False),
    (ResourcesConfig(workers_per_trial=4, cpus_per_worker=4, gpus_per_worker=1), [GPU_NODE], True),
    # PACK may split a trial over nodes; STRICT_PACK may not.
    (ResourcesConfig(workers_per_trial=8, cpus_per_worker=2, gpus_per_worker=1), [GPU_NODE, GPU_NODE], True),
    (ResourcesConfig(workers_per_trial=8, cpus_per_worker=2, gpus_per_worker=1,
                     placement_strategy="STRICT_PACK"), [GPU_NODE, GPU_NODE], False),
    # STRICT_SPREAD needs as many nodes as workers.
    (ResourcesConfig(workers_per_trial=2, cpus_per_worker=1, placement_strategy="STRICT_SPREAD"), [CPU_NODE], False),
    (ResourcesConfig(workers_per_trial=2, cpus_per_worker=1, placement_strategy="STRICT_SPREAD"),
     [CPU_NODE, CPU_NODE], True),
    (ResourcesConfig(workers_per_trial=1, cpus_per_worker=1, gpus_per_worker=0.25), [GPU_NODE], True),
])
def test_placements(res, nodes, fits):
    if fits:
        assert check_trial_fits(res, nodes) is None
    else:
        with pytest.raises(ConfigError):
            check_trial_fits(res, nodes)


def test_with_an_autoscaler_it_says_once_that_it_waits():
    res = ResourcesConfig(workers_per_trial=1, cpus_per_worker=8, gpus_per_worker=1, autoscaling=True)
    line = check_trial_fits(res, [CPU_NODE])
    assert line.startswith("[astray]") and "autoscaler" in line and "\n" not in line


def test_a_class_count_that_does_not_match_the_data_is_caught_on_the_driver(tmp_path):
    """A 1000-class config pointed at a 3-class ImageFolder used to fail inside every trial."""
    from tests.unit.test_data import _folder_tree

    train = _folder_tree(tmp_path / "train", {"cat": 2, "dog": 2, "emu": 2})
    val = _folder_tree(tmp_path / "val", {"cat": 1, "dog": 1, "emu": 1})
    spec = load_sweep_spec("configs/quickstart.yaml", ["dataset.type=folder", f"dataset.train_dir={train}",
                                                  f"dataset.val_dir={val}", "dataset.num_classes=1000"])
    with pytest.raises(ConfigError, match="dataset.num_classes=1000 but dataset.train_dir"):
        check_data_on_driver(spec)
    check_data_on_driver(load_sweep_spec("configs/quickstart.yaml", ["dataset.type=folder", f"dataset.train_dir={train}",
                                                                f"dataset.val_dir={val}", "dataset.num_classes=3"]))


def _started(tmp_path, overrides: list[str]) -> list[str]:
    """A sweep whose manifest exists (as the driver writes it first), started with ``overrides``."""
    base = [f"sweep.results_dir={tmp_path}", "sweep.name=sw", *overrides]
    spec = load_sweep_spec(QUICK, base)
    ResultStore(tmp_path / "sw", {}).write_manifest({"config": resolved_sweep_config(spec), "study_name": "x"})
    return base


def test_a_sweep_exists_once_its_manifest_does(tmp_path):
    spec = load_sweep_spec(QUICK, [f"sweep.results_dir={tmp_path}", "sweep.name=sw"])
    # Nothing written yet (the driver died in its first seconds): --resume starts the sweep.
    assert check_before_start(spec, resume=True) is False
    assert check_before_start(spec, resume=False) is False
    _started(tmp_path, [])
    with pytest.raises(ConfigError, match="already has results.*--resume"):
        check_before_start(spec, resume=False)
    assert check_before_start(spec, resume=True) is True


def test_a_folder_with_trials_but_no_manifest_is_not_resumed_or_overwritten(tmp_path):
    spec = load_sweep_spec(QUICK, [f"sweep.results_dir={tmp_path}", "sweep.name=sw"])
    (tmp_path / "sw" / "trials").mkdir(parents=True)
    (tmp_path / "sw" / "trials" / "t.parquet").write_bytes(b"")
    for resume in (True, False):
        with pytest.raises(ConfigError, match="sweep.name|not a sweep"):
            check_before_start(spec, resume=resume)


def test_resume_refuses_a_config_that_would_train_something_else(tmp_path):
    base = _started(tmp_path, ["training.epochs=3", "search.repeats=2"])
    with pytest.raises(ConfigError) as err:
        check_before_start(load_sweep_spec(QUICK, base + ["training.epochs=4"]), resume=True)
    message = str(err.value)
    assert "training.epochs=4" in message and "started with 3" in message and "\n" not in message
    with pytest.raises(ConfigError, match="search.repeats=3"):
        check_before_start(load_sweep_spec(QUICK, base + ["search.repeats=3"]), resume=True)
    # How trials are placed, retried and logged may change.
    check_before_start(load_sweep_spec(QUICK, base + ["search.max_concurrent=1", "sweep.max_failures=5",
                                                 "resources.cpus_per_worker=2"]), resume=True)
