"""Imported as `pynvml` by llmlb servers that tests start (see tests/support/fake_nvml.py):
NVML's functions, answered by a FakeNvml with the devices in FAKE_NVML_DEVICES."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout, for `tests`

from tests.support.fake_nvml import FakeNvml

_nvml = FakeNvml.from_env()


def __getattr__(name: str):
    return getattr(_nvml, name)
