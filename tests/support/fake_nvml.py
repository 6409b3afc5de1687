"""A stand-in for NVML (the pynvml module) with made-up GPUs, or none.

In-process tests hand a FakeNvml to `llmlb.engine.gpu.Gpus(nvml=...)`. Server processes started
by tests import tests/support/nvml_standin/pynvml.py instead of the real pynvml (ServerProcess
puts that directory first on PYTHONPATH), which serves the devices given as JSON in
FAKE_NVML_DEVICES. Either way, what a test sees of GPUs does not depend on the machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

DEVICES_ENV = "FAKE_NVML_DEVICES"
STANDIN_DIR = Path(__file__).resolve().parent / "nvml_standin"
GIB = 1024**3


@dataclass(frozen=True)
class FakeGpu:
    name: str = "NVIDIA Fake 24GB"
    total: int = 24 * GIB
    used: int = 6 * GIB
    temperature: int | None = 61  # None: the device has no sensor (NVML raises)
    utilization: int = 37


class NVMLError(Exception):
    """What pynvml raises; a missing driver is one."""


class FakeNvml:
    """The pynvml functions llmlb calls. `devices=None` is a machine without an NVIDIA driver:
    nvmlInit fails as pynvml's does there. `broken=True` fails every read after init."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, devices: Sequence[FakeGpu] | None, broken: bool = False):
        self.devices = devices
        self.broken = broken
        self.initialised = False
        self.shut_down = False

    @classmethod
    def from_env(cls) -> FakeNvml:
        raw = os.environ.get(DEVICES_ENV, "")
        if not raw:
            return cls(None)
        return cls([FakeGpu(**d) for d in json.loads(raw)])

    def nvmlInit(self) -> None:
        if self.devices is None:
            raise NVMLError("NVML Shared Library Not Found")
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def _device(self, handle: int) -> FakeGpu:
        if self.broken or not self.initialised or self.devices is None:
            raise NVMLError("Uninitialized" if not self.broken else "GPU is lost")
        return self.devices[handle]

    def nvmlDeviceGetCount(self) -> int:
        if self.broken or self.devices is None:
            raise NVMLError("Uninitialized")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._device(index)
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._device(handle).name

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        d = self._device(handle)
        return SimpleNamespace(total=d.total, used=d.used, free=d.total - d.used)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        d = self._device(handle)
        if d.temperature is None or sensor != self.NVML_TEMPERATURE_GPU:
            raise NVMLError("Not Supported")
        return d.temperature

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=self._device(handle).utilization, memory=0)


def server_env(devices: Sequence[FakeGpu] | None) -> dict[str, str]:
    """Environment for a server process that should see `devices` (None: no NVIDIA driver)."""
    path = os.pathsep.join(p for p in (str(STANDIN_DIR), os.environ.get("PYTHONPATH")) if p)
    value = json.dumps([asdict(d) for d in devices]) if devices is not None else ""
    return {"PYTHONPATH": path, DEVICES_ENV: value}
