"""GPU telemetry through pynvml (NVML). Without an NVIDIA driver: CPU, and no noise in the log."""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("llmlb.gpu")


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    vram_total_bytes: int
    vram_used_bytes: int
    temperature: float | None
    utilization: float | None


@dataclass(frozen=True)
class GpuInfo:
    devices: tuple[GpuDevice, ...] = field(default_factory=tuple)

    @property
    def available(self) -> bool:
        return bool(self.devices)

    @property
    def name(self) -> str:
        return self.devices[0].name if self.devices else "CPU"

    @property
    def vram_total_bytes(self) -> int:
        return sum(d.vram_total_bytes for d in self.devices)

    @property
    def vram_used_bytes(self) -> int:
        return sum(d.vram_used_bytes for d in self.devices)

    @property
    def vram_percent(self) -> float | None:
        return (
            100.0 * self.vram_used_bytes / self.vram_total_bytes if self.vram_total_bytes else None
        )

    @property
    def temperature(self) -> float | None:
        temps = [d.temperature for d in self.devices if d.temperature is not None]
        return max(temps) if temps else None

    def as_dict(self) -> dict:
        return {
            "gpu_name": self.name if self.available else None,
            "vram_total_bytes": self.vram_total_bytes,
            "vram_used_bytes": self.vram_used_bytes,
            "gpu_temperature": self.temperature,
            "devices": [d.__dict__ for d in self.devices],
        }


def _import_pynvml() -> Any:
    with warnings.catch_warnings():  # pynvml 12+ says to use nvidia-ml-py, which it wraps
        warnings.simplefilter("ignore", FutureWarning)
        import pynvml

    return pynvml


class Gpus:
    """Initialises NVML once; every read after a failed init is a cheap 'no GPU'.

    `nvml` is the pynvml module by default; tests hand in a stand-in with the same functions
    (tests/support/fake_nvml.py) to see both a machine with GPUs and one without.
    """

    def __init__(self, nvml: Any = None):
        self._lock = threading.Lock()
        self._given = nvml
        self._nvml: Any = None
        self._tried = False

    def _init(self):
        if self._tried:
            return self._nvml
        self._tried = True
        try:
            nvml = self._given if self._given is not None else _import_pynvml()
            nvml.nvmlInit()
            self._nvml = nvml
        except Exception as exc:  # no driver, no library: this machine has no NVIDIA GPU
            log.debug("no NVIDIA GPU: %s", exc)
            self._nvml = None
        return self._nvml

    def read(self) -> GpuInfo:
        with self._lock:
            nvml = self._init()
            if nvml is None:
                return GpuInfo()
            devices = []
            try:
                for i in range(nvml.nvmlDeviceGetCount()):
                    h = nvml.nvmlDeviceGetHandleByIndex(i)
                    name = nvml.nvmlDeviceGetName(h)
                    mem = nvml.nvmlDeviceGetMemoryInfo(h)
                    try:
                        temp = float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
                    except Exception:
                        temp = None
                    try:
                        util = float(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
                    except Exception:
                        util = None
                    devices.append(
                        GpuDevice(
                            i,
                            name.decode() if isinstance(name, bytes) else name,
                            int(mem.total),
                            int(mem.used),
                            temp,
                            util,
                        )
                    )
            except Exception as exc:
                log.warning("reading GPU telemetry failed: %s", exc)
                return GpuInfo()
            return GpuInfo(tuple(devices))

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                with contextlib.suppress(Exception):
                    self._nvml.nvmlShutdown()
                self._nvml = None
