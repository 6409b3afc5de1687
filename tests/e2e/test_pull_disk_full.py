"""A disk that fills up during a pull, for real: the node server runs in its own mount
namespace (`unshare`) with LLMLB_HOME on a 48 MB tmpfs, and the test fills that tmpfs while
the download runs (through /proc/<pid>/root, the server's view of the file system). Both the
partial file's writes and SQLite's writes then fail as they do on a full disk.

Skipped where unprivileged user namespaces (or unshare) are not available.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.hub_server import HubServer
from tests.support.procs import LLMLB, ServerProcess, run_cli, wait_for
from tests.support.tiny_model import TinySpec, make_tiny_gguf

pytestmark = pytest.mark.e2e
TMPFS = "48m"


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


if not sys.platform.startswith("linux") or not _can_mount_tmpfs():
    pytest.skip("needs unshare and user namespaces to mount a small tmpfs", allow_module_level=True)


class TmpfsNode(ServerProcess):
    """`llmlb node serve` with its LLMLB_HOME on a tmpfs of its own."""

    def start(self, timeout: float = 30) -> TmpfsNode:
        self.home.mkdir(parents=True, exist_ok=True)
        script = f'mount -t tmpfs -o size={TMPFS} tmpfs "$LLMLB_HOME" && exec "$@"'
        serve = [*LLMLB, "node", "serve", "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "-rm", "sh", "-c", script, "sh", *serve],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    def path(self, relative: str) -> Path:
        """A path inside the server's LLMLB_HOME, as the server sees it."""
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/root") / str(self.home).lstrip("/") / relative


def fill(path: Path) -> None:
    """Write zeros until the file system says it is full."""
    block = bytes(1 << 20)
    with open(path, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(block)


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
