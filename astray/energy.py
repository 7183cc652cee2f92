"""Energy meters behind one begin/end interface, each labelled with its source.

- ``nvml``: the GPU's total-energy counter (millijoules since driver load, whole
  device, Volta and newer), read after a device sync at each window edge.
- ``model``: seconds x ``energy.model_watts``. An *estimate*, always labelled so.
"""

from __future__ import annotations

import time
from typing import Protocol

import torch

from astray.config import EnergyConfig
from astray.errors import ConfigError


class Meter(Protocol):
    source: str  # written to the results as energy_source

    def begin(self) -> None: ...

    def end(self) -> float:
        """Joules since the matching :meth:`begin`."""
        ...


class ModelMeter:
    """Wall seconds x configured watts. Not a measurement."""

    source = "model"

    def __init__(self, watts: float) -> None:
        self.watts = watts
        self._t0 = 0.0

    def begin(self) -> None:
        self._t0 = time.perf_counter()

    def end(self) -> float:
        return (time.perf_counter() - self._t0) * self.watts


class NvmlMeter:
    """Sum of the NVML total-energy counters of the given CUDA devices."""

    source = "nvml"

    def __init__(self, devices: list[torch.device]) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._devices = devices
        self._handles = [self._handle_for(d) for d in devices]
        self._start: list[int] = []

    def _handle_for(self, device: torch.device):
        # Match by UUID: CUDA_VISIBLE_DEVICES renumbers devices, NVML does not.
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        for i in range(self._nvml.nvmlDeviceGetCount()):
            handle = self._nvml.nvmlDeviceGetHandleByIndex(i)
            nv_uuid = self._nvml.nvmlDeviceGetUUID(handle)
            nv_uuid = nv_uuid.decode() if isinstance(nv_uuid, bytes) else nv_uuid
            if nv_uuid.removeprefix("GPU-") == uuid.removeprefix("GPU-"):
                return handle
        raise RuntimeError(f"NVML has no device with UUID {uuid}")

    def _read_mj(self) -> list[int]:
        for d in self._devices:
            torch.cuda.synchronize(d)
        return [self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles]

    def begin(self) -> None:
        self._start = self._read_mj()

    def end(self) -> float:
        return sum(b - a for a, b in zip(self._start, self._read_mj())) / 1000.0


def nvml_available(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        meter = NvmlMeter([device])
        meter.begin()
        meter.end()
        return True
    except Exception:  # no library, no driver, or a card without the energy counter
        return False


def create_meter(cfg: EnergyConfig, device: torch.device) -> Meter:
    """``energy.meter``: auto takes nvml when it works, else the labelled model."""
    if cfg.meter == "model":
        return ModelMeter(cfg.model_watts)
    if cfg.meter == "nvml":
        if not nvml_available(device):
            raise ConfigError("energy.meter='nvml' but no NVML energy counter is readable on this "
                              "machine (needs a CUDA device, Volta or newer); use auto or model")
        return NvmlMeter([device])
    return NvmlMeter([device]) if nvml_available(device) else ModelMeter(cfg.model_watts)
