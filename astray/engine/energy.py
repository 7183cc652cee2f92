"""Energy meters behind one begin/end interface, each labelled with its source.

- ``nvml``: the GPU total-energy counter (millijoules since the driver loaded, whole
  device, Volta and newer), read after a device sync at each window edge. GPUs are
  matched by UUID, not index: ``CUDA_VISIBLE_DEVICES`` renumbers devices, NVML does not.
- ``nvml_power``: older cards without the counter: board power polled in a thread and
  integrated over the window (trapezoids). Measured, but coarser.
- ``rapl``: Linux powercap package domains (``/sys/class/powercap/intel-rapl:N``),
  counter wrap-around handled; nested sub-domains (core, uncore, dram) are inside their
  package and are never added to it.
- ``model``: seconds x ``energy.model_watts``. An *estimate*, always labelled so.

Every meter also names its ``device_keys``: the physical devices it reads. A DDP run
sums energy over distinct devices only, so two ranks on one GPU or one CPU package
are not counted twice.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from astray.config.run import EnergyConfig
from astray.errors import ConfigError

POWERCAP_ROOT = Path("/sys/class/powercap")


class Meter(Protocol):
    source: str  # written to the results as energy_source
    device_keys: list[str]  # the physical devices read (for de-duplication across ranks)

    def begin(self) -> None: ...

    def end(self) -> float:
        """Joules since the matching :meth:`begin`."""
        ...


class ModelMeter:
    """Wall seconds x configured watts per process. Not a measurement."""

    source = "model"

    def __init__(self, watts: float) -> None:
        self.watts = watts
        self.device_keys = [f"process:{socket.gethostname()}:{os.getpid()}"]
        self._t0 = 0.0

    def begin(self) -> None:
        self._t0 = time.perf_counter()

    def end(self) -> float:
        return (time.perf_counter() - self._t0) * self.watts


def _decode(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _nvml_handles(nvml: Any, uuids: list[str]) -> list[Any]:
    wanted = {u.removeprefix("GPU-") for u in uuids}
    found = {}
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        uuid = _decode(nvml.nvmlDeviceGetUUID(handle)).removeprefix("GPU-")
        if uuid in wanted:
            found[uuid] = handle
    missing = wanted - set(found)
    if missing:
        raise RuntimeError(f"NVML sees no GPU with UUID {', '.join(sorted(missing))}")
    return [found[u.removeprefix("GPU-")] for u in uuids]


class NvmlMeter:
    """Sum of the NVML total-energy counters of the given GPUs (by UUID)."""

    source = "nvml"

    def __init__(self, uuids: list[str], nvml: Any, sync: Callable[[], None] = lambda: None) -> None:
        self._nvml = nvml
        self._handles = _nvml_handles(nvml, uuids)
        self._sync = sync
        self.device_keys = [f"gpu:{u.removeprefix('GPU-')}" for u in uuids]
        self._start: list[int] = []

    def _read_mj(self) -> list[int]:
        self._sync()  # work queued on the GPU belongs to this window
        return [int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self._handles]

    def begin(self) -> None:
        self._start = self._read_mj()

    def end(self) -> float:
        return sum(b - a for a, b in zip(self._start, self._read_mj())) / 1000.0


class NvmlPowerMeter:
    """Board power (milliwatts) polled every ``interval_s`` and integrated over the window."""

    source = "nvml_power"

    def __init__(self, uuids: list[str], nvml: Any, sync: Callable[[], None] = lambda: None,
                 interval_s: float = 0.05) -> None:
        self._nvml = nvml
        self._handles = _nvml_handles(nvml, uuids)
        self._sync = sync
        self.interval_s = interval_s
        self.device_keys = [f"gpu:{u.removeprefix('GPU-')}" for u in uuids]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._joules = 0.0

    def _watts(self) -> float:
        return sum(self._nvml.nvmlDeviceGetPowerUsage(h) for h in self._handles) / 1000.0

    def _poll(self) -> None:
        t_prev, w_prev = time.perf_counter(), self._watts()
        while not self._stop.wait(self.interval_s):
            t, w = time.perf_counter(), self._watts()
            self._joules += 0.5 * (w + w_prev) * (t - t_prev)
            t_prev, w_prev = t, w
        t, w = time.perf_counter(), self._watts()
        self._joules += 0.5 * (w + w_prev) * (t - t_prev)

    def begin(self) -> None:
        self._sync()
        self._joules = 0.0
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="astray-power-poll", daemon=True)
        self._thread.start()

    def end(self) -> float:
        self._sync()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self._joules


class RaplMeter:
    """Package energy from Linux powercap, summed over top-level package domains."""

    source = "rapl"

    def __init__(self, root: Path = POWERCAP_ROOT) -> None:
        self.domains = rapl_packages(root)
        if not self.domains:
            raise RuntimeError(f"no readable RAPL package domain under {root}")
        self._max = [int((d / "max_energy_range_uj").read_text()) for d in self.domains]
        self.device_keys = [f"rapl:{socket.gethostname()}:{d.name}" for d in self.domains]
        self._start: list[int] = []

    def _read(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self.domains]

    def begin(self) -> None:
        self._start = self._read()

    def end(self) -> float:
        total = 0
        for a, b, top in zip(self._start, self._read(), self._max):
            # The counter wraps at max_energy_range_uj; one wrap per window is assumed
            # (a package wraps after minutes to hours, windows are one epoch).
            total += b - a if b >= a else b + top - a
        return total / 1e6


def rapl_packages(root: Path = POWERCAP_ROOT) -> list[Path]:
    """Readable top-level package domains (``intel-rapl:N``, not ``intel-rapl:N:M``).

    Sub-domains sit inside their package's energy, so adding them would count twice.
    """
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        parts = d.name.split(":")
        if len(parts) != 2 or parts[0] not in ("intel-rapl", "amd-rapl"):
            continue
        try:
            name = (d / "name").read_text().strip()
            int((d / "energy_uj").read_text())
            int((d / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue  # often root-only, or absent in containers
        if name.startswith("package"):
            out.append(d)
    return out


def _load_nvml() -> Any | None:
    try:
        import pynvml  # optional at run time: machines without the library or a driver fall back

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # no library, no driver
        return None


def _cuda_uuid(device: torch.device) -> str:
    return str(torch.cuda.get_device_properties(device).uuid)


def nvml_counter_supported(nvml: Any, uuid: str) -> bool:
    try:
        NvmlMeter([uuid], nvml).begin()
        return True
    except Exception:  # NVMLError_NotSupported on pre-Volta cards
        return False


def create_meter(cfg: EnergyConfig, device: torch.device, *, nvml: Any | None = None,
                 powercap_root: Path = POWERCAP_ROOT) -> Meter:
    """The meter ``energy.meter`` names; ``auto`` takes the best the machine offers.

    ``auto``: NVML (counter, else power polling) for a CUDA device, RAPL for the CPU
    when readable, else the labelled model. Naming a meter the machine lacks is an
    error, never a silent fallback.
    """
    want = cfg.meter
    if want == "model":
        return ModelMeter(cfg.model_watts)
    if device.type == "cuda":
        lib = nvml if nvml is not None else _load_nvml()
        uuid = _cuda_uuid(device) if lib is not None else ""

        def sync() -> None:
            torch.cuda.synchronize(device)

        if want in ("auto", "nvml") and lib is not None:
            try:
                if nvml_counter_supported(lib, uuid):
                    return NvmlMeter([uuid], lib, sync)
                return NvmlPowerMeter([uuid], lib, sync)
            except RuntimeError as exc:
                if want == "nvml":
                    raise ConfigError(f"energy.meter='nvml': {exc}") from None
        if want == "nvml":
            raise ConfigError("energy.meter='nvml' but NVML cannot be loaded (no NVIDIA driver or "
                              "nvidia-ml-py); use auto or model")
    elif want == "nvml":
        raise ConfigError("energy.meter='nvml' needs a CUDA device (training.device is cpu); use auto, rapl or model")
    if want in ("auto", "rapl"):
        try:
            return RaplMeter(powercap_root)
        except RuntimeError as exc:
            if want == "rapl":
                raise ConfigError(f"energy.meter='rapl': {exc} (often root-only or absent in "
                                  "containers); use auto or model") from None
    return ModelMeter(cfg.model_watts)


def measure_idle_watts(meter: Meter, seconds: float) -> float:
    """Average power over ``seconds`` of doing nothing, for optional idle subtraction."""
    meter.begin()
    time.sleep(seconds)
    return meter.end() / seconds
