"""Energy meters: NVML (counter and power polling), RAPL, the model, and their aggregation.

There is no GPU and no readable powercap here, so NVML is a small fake library with
NVML's call surface and powercap a directory tree laid out like /sys/class/powercap.
The meters, the selection logic and the train-loop aggregation are the real code.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from astray.config.run import EnergyConfig
from astray.engine.energy import ModelMeter, NvmlMeter, NvmlPowerMeter, RaplMeter, create_meter, rapl_packages
from astray.errors import ConfigError


class NotSupported(Exception):
    pass


class FakeNvml:
    """NVML's functions over a few fake GPUs; energy advances with each read."""

    def __init__(self, uuids: list[str], watts: float = 200.0, counter: bool = True) -> None:
        self.uuids = uuids
        self.watts = watts
        self.counter = counter
        self.t0 = time.perf_counter()

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        return f"GPU-{self.uuids[handle]}".encode()

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        if not self.counter:
            raise NotSupported("NVML_ERROR_NOT_SUPPORTED")
        # millijoules since "driver load": watts x seconds, distinct per device
        return int(1_000_000 * (handle + 1) + (time.perf_counter() - self.t0) * self.watts * 1000)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return int(self.watts * 1000)  # milliwatts


def _powercap(root: Path, packages: dict[int, tuple[int, int]], readable: bool = True) -> Path:
    """A powercap tree: package domains with (energy_uj, max_energy_range_uj), plus sub-domains."""
    for i, (energy, top) in packages.items():
        d = root / f"intel-rapl:{i}"
        d.mkdir(parents=True)
        (d / "name").write_text(f"package-{i}\n")
        (d / "energy_uj").write_text(f"{energy}\n")
        (d / "max_energy_range_uj").write_text(f"{top}\n")
        sub = root / f"intel-rapl:{i}:0"  # core: inside the package, must not be added
        sub.mkdir()
        (sub / "name").write_text("core\n")
        (sub / "energy_uj").write_text("999999999\n")
        (sub / "max_energy_range_uj").write_text("262143328850\n")
        if not readable:
            (d / "energy_uj").chmod(0)
    (root / "intel-rapl").mkdir(exist_ok=True)  # the control-type folder, not a domain
    return root


def _set(root: Path, i: int, energy: int) -> None:
    (root / f"intel-rapl:{i}" / "energy_uj").write_text(f"{energy}\n")


def test_nvml_counter_sums_only_the_requested_gpus_by_uuid():
    nvml = FakeNvml(["aaa", "bbb", "ccc"], watts=100.0)
    meter = NvmlMeter(["GPU-ccc", "aaa"], nvml)  # order and prefix do not matter
    assert meter.device_keys == ["gpu:ccc", "gpu:aaa"]
    meter.begin()
    time.sleep(0.2)
    joules = meter.end()
    assert 2 * 100 * 0.19 < joules < 2 * 100 * 0.5  # two GPUs at 100 W for ~0.2 s


def test_nvml_missing_gpu_is_an_error():
    with pytest.raises(RuntimeError, match="zzz"):
        NvmlMeter(["zzz"], FakeNvml(["aaa"]))


def test_power_polling_integrates_watts_over_the_window():
    meter = NvmlPowerMeter(["aaa"], FakeNvml(["aaa"], watts=250.0, counter=False), interval_s=0.01)
    meter.begin()
    time.sleep(0.3)
    joules = meter.end()
    assert joules == pytest.approx(250.0 * 0.3, rel=0.2)


def test_rapl_reads_packages_only_and_handles_wrap(tmp_path):
    root = _powercap(tmp_path / "powercap", {0: (1_000_000, 10_000_000), 1: (9_000_000, 10_000_000)})
    assert [p.name for p in rapl_packages(root)] == ["intel-rapl:0", "intel-rapl:1"]
    meter = RaplMeter(root)
    meter.begin()
    _set(root, 0, 3_000_000)  # +2 J
    _set(root, 1, 500_000)  # wrapped: +1.5 J (10 - 9 + 0.5)
    assert meter.end() == pytest.approx(3.5)


def test_rapl_unreadable_or_absent_is_not_offered(tmp_path):
    import os

    if os.geteuid() == 0:
        # root reads mode-000 files; an absent energy file is the same case for the code
        root = _powercap(tmp_path / "pc", {0: (1, 10)})
        (root / "intel-rapl:0" / "energy_uj").unlink()
    else:
        root = _powercap(tmp_path / "pc", {0: (1, 10)}, readable=False)
    assert rapl_packages(root) == []
    assert rapl_packages(tmp_path / "nowhere") == []
    with pytest.raises(RuntimeError):
        RaplMeter(root)


def test_auto_picks_the_best_meter_and_named_meters_never_fall_back(tmp_path):
    cpu = torch.device("cpu")
    root = _powercap(tmp_path / "pc", {0: (5, 10_000)})
    assert create_meter(EnergyConfig(meter="auto"), cpu, powercap_root=root).source == "rapl"
    assert create_meter(EnergyConfig(meter="auto"), cpu, powercap_root=tmp_path / "none").source == "model"
    assert create_meter(EnergyConfig(meter="model"), cpu, powercap_root=root).source == "model"
    with pytest.raises(ConfigError, match="energy.meter='rapl'"):
        create_meter(EnergyConfig(meter="rapl"), cpu, powercap_root=tmp_path / "none")
    with pytest.raises(ConfigError, match="energy.meter='nvml'"):
        create_meter(EnergyConfig(meter="nvml"), cpu)


def test_model_meter_is_seconds_times_watts():
    meter = ModelMeter(50.0)
    meter.begin()
    time.sleep(0.1)
    assert meter.end() == pytest.approx(5.0, rel=0.5)
    assert meter.source == "model"


def test_training_reports_train_and_eval_energy_with_source_and_scope(tmp_path):
    from astray.config.load import load_config
    from astray.engine.trainer import run
    from tests.conftest import REPO, small_overrides

    rows = run(load_config(REPO / "configs/quickstart.yaml", small_overrides(tmp_path / "r"))).rows
    for r in rows:
        assert r["energy_j"] > 0 and r["val_energy_j"] > 0
        assert (r["energy_source"], r["energy_scope"], r["idle_w"]) == ("model", "process", 0.0)


def test_idle_subtraction_refuses_the_model_meter(tmp_path):
    from astray.config.load import load_config
    from astray.engine.trainer import run
    from tests.conftest import REPO, small_overrides

    cfg = load_config(REPO / "configs/quickstart.yaml",
                      small_overrides(tmp_path / "r", **{"energy.subtract_idle": "true", "energy.meter": "model"}))
    with pytest.raises(ConfigError, match="subtract_idle"):
        run(cfg)
