"""clusters/: Ray's own validator accepts the launcher configs; the RayJob has what KubeRay requires.

The launcher configs go through the offline half of what ``ray up`` does before it
touches a cloud (``ray.autoscaler._private.commands._bootstrap_config``):
``prepare_config`` (merge with the provider's defaults.yaml, the on-prem node type,
merged setup commands, the Docker check, per-type worker bounds), then
``validate_config`` (``ray-schema.json`` via jsonschema, head type among the node types,
the sum of ``min_workers`` within ``max_workers``) and ``check_legacy_fields``. The
provider's resource autodetection and ``bootstrap_config`` (IAM, key pairs, subnets,
AMIs) call the cloud APIs and are not run; sockets are blocked to keep it that way.
"""

from __future__ import annotations

import copy
import re
import shlex
import socket

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import check_legacy_fields, prepare_config, validate_config

from astray.config.sweep import load_sweep_spec
from astray.cli.tune import parse_args
from tests.conftest import REPO

CLUSTERS = REPO / "clusters"
LAUNCHERS = ["aws", "gcp", "onprem"]
CLOUDS = ["aws", "gcp"]
RAYJOB = CLUSTERS / "kuberay-rayjob.yaml"
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("cluster config checks must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _raw(name: str) -> dict:
    return yaml.safe_load((CLUSTERS / f"{name}.yaml").read_text())


def ray_validate(raw: dict) -> dict:
    """What `ray up` checks before its first cloud call; returns the filled-out config."""
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    check_legacy_fields(config)
    return config


@pytest.fixture(scope="module")
def imagenet_trial(tmp_path_factory):
    """(GPUs, CPUs) one trial of configs/imagenet.yaml reserves."""
    data = tmp_path_factory.mktemp("imagenet")
    (data / "train").mkdir()
    (data / "val").mkdir()
    spec = load_sweep_spec(str(REPO / "configs/imagenet.yaml"),
                      [f"dataset.train_dir={data / 'train'}", f"dataset.val_dir={data / 'val'}"])
    r = spec.resources
    return r.workers_per_trial * r.gpus_per_worker, r.workers_per_trial * r.cpus_per_worker


# --------------------------------------------------------------------------- launcher configs

@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_passes_rays_validation(name):
    config = ray_validate(_raw(name))
    assert config["provider"]["type"] == {"aws": "aws", "gcp": "gcp", "onprem": "local"}[name]
    assert config["head_node_type"] in config["available_node_types"]
    for node_type in config["available_node_types"].values():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"]


def test_the_validator_rejects_what_ray_up_would_reject():
    raw = _raw("aws")
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_g5"]["resources"]["GPU"] = 0.5  # schema: integers
    with pytest.raises(jsonschema.ValidationError):
        ray_validate(bad)
    bad = copy.deepcopy(raw)
    bad["head_nodes_type"] = "head"  # unknown top-level key
    with pytest.raises(jsonschema.ValidationError):
        ray_validate(bad)
    bad = copy.deepcopy(raw)
    bad["head_node_type"] = "missing"
    with pytest.raises(ValueError):
        ray_validate(bad)
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_g5"]["min_workers"] = bad["max_workers"] + 1
    with pytest.raises(ValueError):
        ray_validate(bad)


@pytest.mark.parametrize("name", CLOUDS)
def test_cloud_head_takes_no_trials_and_each_gpu_type_fits_an_imagenet_trial(name, imagenet_trial):
    config = ray_validate(_raw(name))
    types = config["available_node_types"]
    head = config["head_node_type"]
    assert types[head]["resources"] == {"CPU": 0}
    gpus, cpus = imagenet_trial
    workers = {k: v for k, v in types.items() if k != head}
    assert workers
    for node_type in workers.values():
        # placement PACK keeps a trial's workers on one node: the node must hold them all
        assert node_type["resources"]["GPU"] >= gpus and node_type["resources"]["CPU"] >= cpus
        assert node_type["max_workers"] >= 1
    assert config["max_workers"] >= max(t["max_workers"] for t in workers.values())
    assert config["idle_timeout_minutes"] > 0


@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_node_installs_astray_and_the_same_ray(name):
    config = ray_validate(_raw(name))
    mounts = config["file_mounts"]
    assert "~/astray/pyproject.toml" in mounts and "~/astray/astray" in mounts
    for remote, local in mounts.items():
        if remote == "~/.ray/auth_token":  # the token, from the user's machine (test below)
            continue
        assert remote.startswith("~/astray/")
        assert (REPO / local).exists(), f"file_mounts {remote}: {local} is not in the repository"
    for key in ("head_setup_commands", "worker_setup_commands"):  # merged with setup_commands
        commands = config[key]
        assert any(re.search(r"pip install .*-e ~/astray\b", c) for c in commands), key
        pins = [m.group(1) for c in commands for m in [re.search(r"ray\[default\]==([\w.]+)", c)] if m]
        assert pins == [ray.__version__], key


@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_node_starts_with_token_authentication(name):
    """RAY_AUTH_MODE=token where Ray starts on head and workers and for every driver
    shell, and the token shipped from outside the repository, never written in it."""
    config = ray_validate(_raw(name))
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
    assert any("export RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in config["setup_commands"])
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "RAY_AUTH_TOKEN=" not in (CLUSTERS / f"{name}.yaml").read_text()


def test_the_rayjob_turns_on_token_authentication():
    docs = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d]
    job = next(d for d in docs if d["kind"] == "RayJob")
    assert job["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}


@pytest.mark.parametrize("name", LAUNCHERS)
def test_start_commands_start_a_head_and_join_it(name):
    config = ray_validate(_raw(name))
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    assert "ray start --head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker


# --------------------------------------------------------------------------- KubeRay RayJob

@pytest.fixture(scope="module")
def manifest():
    docs = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d]
    jobs = [d for d in docs if d.get("kind") == "RayJob"]
    assert len(jobs) == 1
    claims = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    return jobs[0], claims


def _set_values(entrypoint: str) -> dict[str, str]:
    args = parse_args(shlex.split(entrypoint)[3:])
    return dict(item.split("=", 1) for item in args.overrides)


def _string_map(value) -> bool:  # CRD type map[string]string
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _groups(spec: dict) -> list[tuple[str, dict]]:
    cluster = spec["rayClusterSpec"]
    return [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]


def test_rayjob_has_the_fields_kuberay_requires(manifest):
    job, _ = manifest
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    name = job["metadata"]["name"]
    assert DNS1035.match(name) and len(name) <= 47  # KubeRay: MaxRayJobNameLength
    spec = job["spec"]
    assert "astray.tune" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    assert spec["submissionMode"] in SUBMISSION_MODES
    assert spec.get("backoffLimit", 0) >= 0
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    # headGroupSpec: template (+ rayStartParams, required before KubeRay 1.4)
    head = cluster["headGroupSpec"]
    assert _string_map(head["rayStartParams"])
    # workerGroupSpecs: groupName, minReplicas, maxReplicas, rayStartParams, template
    groups = cluster["workerGroupSpecs"]
    assert groups and len({g["groupName"] for g in groups}) == len(groups)
    for g in groups:
        assert DNS1035.match(g["groupName"])
        assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"]
        assert _string_map(g["rayStartParams"])
    images = set()
    for group_name, group in _groups(spec):
        containers = group["template"]["spec"]["containers"]
        assert containers, group_name  # the Ray container is the first one
        for c in containers:
            assert c["name"] and c["image"], group_name
        images.add(containers[0]["image"])
    assert len(images) == 1  # head, workers and the submitter (head's image) run the same Ray


def test_rayjob_worker_pods_have_gpus_for_a_packed_imagenet_trial(manifest, imagenet_trial):
    job, _ = manifest
    gpus, cpus = imagenet_trial
    for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= gpus
        assert float(limits["cpu"]) >= cpus


def test_rayjob_storage_is_a_shared_volume_on_every_pod(manifest):
    job, claims = manifest
    values = _set_values(job["spec"]["entrypoint"])
    paths = [values["sweep.storage"], values["sweep.results_dir"]]
    for group_name, group in _groups(job["spec"]):
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = pod["containers"][0]["volumeMounts"]
        for path in paths:
            mount = [m for m in mounts if path.startswith(m["mountPath"].rstrip("/") + "/")]
            assert len(mount) == 1 and not mount[0].get("readOnly"), (group_name, path)
            claim = volumes[mount[0]["name"]]["persistentVolumeClaim"]["claimName"]
            assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"], (group_name, claim)


def test_rayjob_entrypoint_is_a_valid_astray_sweep(manifest, tmp_path):
    job, _ = manifest
    entrypoint = job["spec"]["entrypoint"]
    # KubeRay pastes the entrypoint unquoted into the submitter's shell command line
    assert not re.search(r"[;&|<>`$()]", entrypoint)
    words = shlex.split(entrypoint)
    assert words[:3] == ["python", "-m", "astray.tune"]
    args = parse_args(words[3:])
    assert args.config.startswith("/") and "/configs/" in args.config  # the job's cwd is Ray's
    config = REPO / "configs" / args.config.split("/configs/", 1)[1]
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    local = {"dataset.train_dir": tmp_path / "train", "dataset.val_dir": tmp_path / "val"}
    overrides = [f"{k}={local.get(k, v)}" for k, v in _set_values(entrypoint).items()]
    spec = load_sweep_spec(str(config), overrides)
    assert spec.sweep.storage.startswith("/mnt/") and spec.sweep.results_dir.startswith("/mnt/")


# --------------------------------------------------------------------------- README

def test_clusters_readme_explains_storage_launch_and_resume():
    text = (CLUSTERS / "README.md").read_text()
    for needle in ("sweep.storage", "sweep.results_dir", "sweep.max_failures", "--resume", "ray up clusters/aws.yaml",
                   "ray job submit", "ray down", "kubectl apply -f clusters/kuberay-rayjob.yaml",
                   "resources.workers_per_trial", "resources.gpus_per_worker", "resources.cpus_per_worker",
                   "resources.placement_strategy", "search.max_concurrent"):
        assert needle in text, needle
    for path in CLUSTERS.glob("*.yaml"):
        assert f"`{path.name}`" in text, path.name
