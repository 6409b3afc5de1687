"""A disk that fills up during a pull, for real: the node server runs in its own mount
namespace (`unshare`) with LLMLB_HOME on a 48 MB tmpfs, and the test fills that tmpfs while
the download runs (through /proc/<pid>/root, the server's view of the file system). Both the
partial file's writes and SQLite's writes then fail as they do on a full disk.

Skipped where unprivileged user namespaces (or unshare) are not available.
"""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

from tests.support.hub_server import HubServer
from tests.support.procs import LLMLB, run_cli, wait_for
from tests.support.tiny_model import TinySpec, make_tiny_gguf
from tests.support.tmpfs import TmpfsNode, can_mount_tmpfs, fill

pytestmark = pytest.mark.e2e


if not can_mount_tmpfs():
    pytest.skip("needs unshare and user namespaces to mount a small tmpfs", allow_module_level=True)


@pytest.fixture
def hub(tmp_path):
    spec = TinySpec(n_embd=256, n_layer=4, n_ff=2048, seed=5)  # about 20 MB
    model = make_tiny_gguf(tmp_path / "src" / "big-F32.gguf", spec)
    with HubServer(tmp_path / "hub") as server:
        server.add_repo("acme/big-GGUF", {"big-F32.gguf": model})
        yield server


def tags(node) -> dict:
    return {
        m["name"].removesuffix(":latest"): m
        for m in httpx.get(node.url + "/api/tags").json()["models"]
    }


def test_disk_filling_up_during_a_pull_fails_it_cleanly_and_pull_again_works(hub, llmlb_env):
    hub.fault("big-F32.gguf", rate=2 << 20)  # slow enough to fill the disk mid-download
    with TmpfsNode(llmlb_env, env={"HF_ENDPOINT": hub.url}) as node:
        env = node.client_env()
        puller = subprocess.Popen(
            [*LLMLB, "node", "pull", "acme/big-GGUF"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert wait_for(
            lambda: (tags(node).get("acme/big-GGUF") or {}).get("downloading", {}).get("completed")
        )
        filler = node.path("filler")
        fill(filler)  # something else takes the rest of the disk
        out, err = puller.communicate(timeout=120)  # nothing hangs
        assert puller.returncode == 1, (out, err, node.log())
        assert err.startswith("Error: disk full while writing "), err
        assert len(err.strip().splitlines()) == 1
        # The failure was recorded: nothing shows it as still downloading.
        assert "downloading" not in run_cli("node", "list", env=env).stdout

        os.unlink(filler)
        hub.clear_faults()
        again = run_cli("node", "pull", "acme/big-GGUF", env=env, timeout=120)
        assert again.returncode == 0, again.stderr + node.log()
        model = node.path("models/acme/big-GGUF/big-F32.gguf")
        assert (
            model.read_bytes() == hub.repos["acme/big-GGUF"].files["big-F32.gguf"].path.read_bytes()
        )
