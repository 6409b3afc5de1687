"""GPU telemetry through NVML: a machine with GPUs and one without, by a stand-in NVML; and
the real NVML, which must agree with nvidia-smi wherever this runs."""

import logging
import shutil
import subprocess

from llmlb.engine.gpu import Gpus
from tests.support.fake_nvml import GIB, FakeGpu, FakeNvml


def test_gpus_present_are_read_and_summed():
    nvml = FakeNvml(
        [
            FakeGpu("NVIDIA A", total=24 * GIB, used=6 * GIB, temperature=61, utilization=37),
            FakeGpu("NVIDIA B", total=8 * GIB, used=2 * GIB, temperature=70, utilization=5),
        ]
    )
    info = Gpus(nvml).read()
    assert info.available and info.name == "NVIDIA A"
    assert [(d.index, d.name, d.utilization) for d in info.devices] == [
        (0, "NVIDIA A", 37.0),
        (1, "NVIDIA B", 5.0),
    ]
    assert (info.vram_total_bytes, info.vram_used_bytes) == (32 * GIB, 8 * GIB)
    assert info.vram_percent == 25.0 and info.temperature == 70.0  # the hottest device
    assert info.as_dict() == {
        "gpu_name": "NVIDIA A",
        "vram_total_bytes": 32 * GIB,
        "vram_used_bytes": 8 * GIB,
        "gpu_temperature": 70.0,
        "devices": [d.__dict__ for d in info.devices],
    }


def test_a_device_without_a_temperature_sensor_has_none():
    info = Gpus(FakeNvml([FakeGpu(temperature=None)])).read()
    assert info.available and info.devices[0].temperature is None and info.temperature is None


def test_no_driver_is_no_gpu_without_noise(caplog):
    caplog.set_level(logging.INFO, logger="llmlb.gpu")
    gpus = Gpus(FakeNvml(None))
    info = gpus.read()
    assert not info.available and info.name == "CPU"
    assert info.as_dict() == {
        "gpu_name": None,
        "vram_total_bytes": 0,
        "vram_used_bytes": 0,
        "gpu_temperature": None,
        "devices": [],
    }
    assert info.vram_percent is None and info.temperature is None
    assert gpus.read() == info
    assert caplog.records == []  # a machine without a GPU is normal, not a warning


def test_a_failing_read_is_no_gpu_with_a_warning(caplog):
    nvml = FakeNvml([FakeGpu()], broken=True)
    info = Gpus(nvml).read()
    assert not info.available
    assert any("reading GPU telemetry failed" in r.getMessage() for r in caplog.records)


def test_close_shuts_nvml_down():
    nvml = FakeNvml([FakeGpu()])
    gpus = Gpus(nvml)
    gpus.read()
    gpus.close()
    assert nvml.shut_down


def _nvidia_smi_gpus() -> list[str]:
    """The GPUs the NVIDIA driver lists, asked without NVML's Python binding."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    return [line for line in out.stdout.splitlines() if line.startswith("GPU ")]


def test_the_real_nvml_agrees_with_the_driver():
    """On a machine without an NVIDIA GPU this is the no-GPU branch; with one, the real read."""
    gpus = Gpus()
    try:
        info = gpus.read()
    finally:
        gpus.close()
    listed = _nvidia_smi_gpus()
    assert len(info.devices) == len(listed), (info, listed)
    if listed:
        assert info.vram_total_bytes > 0 and all(d.name for d in info.devices)
    else:
        assert info.as_dict()["gpu_name"] is None
