"""What a node and the router show of GPUs, on a machine with NVIDIA GPUs (a stand-in NVML
with made-up devices) and on the real machine. The no-GPU output is covered where the other
tests run: their servers see a stand-in NVML without devices (tests/support/procs.py)."""

import re
import shutil
import subprocess

import httpx
import pytest

from tests.e2e.conftest import start_node
from tests.support.fake_nvml import GIB, FakeGpu
from tests.support.procs import ServerProcess, run_cli, wait_for

GPUS = (
    FakeGpu("NVIDIA Fake 24GB", total=24 * GIB, used=6 * GIB, temperature=61),
    FakeGpu("NVIDIA Fake 8GB", total=8 * GIB, used=2 * GIB, temperature=70),
)
BEAT = {"LLMLB_HEARTBEAT_MS": "300"}


def load(node, model="org/tiny"):
    r = httpx.post(
        node.url + "/api/generate",
        json={"model": model, "prompt": "hi", "stream": False, "options": {"num_predict": 1}},
        timeout=120,
    )
    assert r.status_code == 200, r.text


@pytest.fixture
def gpu_node(tmp_path, tiny_gguf):
    node = start_node(tmp_path / "home", {"org/tiny": tiny_gguf}, gpus=GPUS)
    yield node
    node.stop()


def test_ps_shows_the_gpus_nvml_reports(gpu_node):
    load(gpu_node)
    gpu = httpx.get(gpu_node.url + "/api/ps").json()["gpu"]
    assert gpu["gpu_name"] == "NVIDIA Fake 24GB"
    assert (gpu["vram_total_bytes"], gpu["vram_used_bytes"]) == (32 * GIB, 8 * GIB)
    assert gpu["gpu_temperature"] == 70 and len(gpu["devices"]) == 2
    ps = run_cli("node", "ps", env=gpu_node.client_env())
    assert ps.returncode == 0, ps.stderr
    row = next(line for line in ps.stdout.splitlines() if line.startswith("org/tiny "))
    assert row.split()[-2:] == ["25%", "70°C"]


def test_the_router_shows_each_nodes_gpu(tmp_path, tiny_gguf):
    router = ServerProcess(tmp_path / "router", kind="router", env=BEAT).start()
    nodes = []
    try:
        for i, gpus in enumerate((GPUS, ())):
            nodes.append(
                start_node(
                    tmp_path / f"node{i}",
                    {"org/tiny": tiny_gguf},
                    env=BEAT,
                    extra_args=("--router", router.url),
                    gpus=gpus,
                )
            )
        env = router.client_env()

        def rows():  # columns are two or more spaces apart; a GPU name has single spaces
            out = run_cli("router", "nodes", env=env).stdout.splitlines()[1:]
            return {cells[1]: cells for cells in (re.split(r"\s{2,}", line) for line in out)}

        assert wait_for(lambda: [cells[2] for cells in rows().values()] == ["online"] * 2)
        listed = rows()
        assert listed[nodes[0].address][2:4] == ["online", "NVIDIA Fake 24GB"]
        assert listed[nodes[1].address][2:4] == ["online", "CPU"]
        status = run_cli("router", "status", env=env).stdout
        assert "VRAM:       25% average utilization" in status  # over the nodes that have GPUs
    finally:
        for n in nodes:
            n.stop()
        router.stop()


def _nvidia_smi_names() -> list[str]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    out = subprocess.run(
        [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
    )
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def test_a_node_reports_the_real_gpus(tmp_path, tiny_gguf):
    """The real NVML: no GPU here when the driver lists none, else the driver's first GPU."""
    node = start_node(tmp_path / "home", {"org/tiny": tiny_gguf}, gpus=None)
    try:
        gpu = httpx.get(node.url + "/api/ps").json()["gpu"]
    finally:
        node.stop()
    names = _nvidia_smi_names()
    assert gpu["gpu_name"] == (names[0] if names else None)
    assert (gpu["vram_total_bytes"] > 0) == bool(names)
    assert "Traceback" not in node.log()
