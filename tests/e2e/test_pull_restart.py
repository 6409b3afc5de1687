"""kill -9 of `llmlb node serve` in the middle of a pull: the next start finishes it, resuming."""

from __future__ import annotations

import hashlib
import sqlite3

import httpx
import pytest

from llmlb.jobs.downloader import split
from tests.support.hub_server import HubServer
from tests.support.procs import ServerProcess, run_cli, wait_for
from tests.support.tiny_model import TinySpec, make_tiny_gguf

pytestmark = pytest.mark.e2e


@pytest.fixture
def hub(tmp_path):
    big = make_tiny_gguf(
        tmp_path / "src" / "big-F32.gguf", TinySpec(n_embd=256, n_layer=4, n_ff=2048, seed=5)
    )
    with HubServer(tmp_path / "hub") as server:
        server.add_repo("acme/big-GGUF", {"big-F32.gguf": big})
        yield server


def _row(home) -> tuple[str, int, int]:
    con = sqlite3.connect(home / "llmlb.db")
    try:
        return con.execute(
            "select status, downloaded_bytes, total_bytes from download_progress"
        ).fetchone()
    finally:
        con.close()


def _requested(hub) -> int:
    total = 0
    for _, path, rng in hub.stats.requests:
        if path.startswith("/_cdn/"):
            first, last = rng.removeprefix("bytes=").split("-")
            total += int(last) - int(first) + 1
    return total


def test_kill_9_mid_download_resumes_at_restart(hub, llmlb_env):
    f = hub.repos["acme/big-GGUF"].files["big-F32.gguf"]
    part = max(p[1] - p[0] for p in split(f.size))
    assert f.size > 2 * part  # several parts, so the bound below means something
    hub.fault("big-F32.gguf", rate=2 << 20)  # slow: the kill lands mid-download
    env = {"HF_ENDPOINT": hub.url}
    server = ServerProcess(llmlb_env, env=env).start()
    try:
        r = httpx.post(
            server.url + "/api/pull", json={"model": "acme/big-GGUF", "stream": False}, timeout=0.5
        )
    except httpx.ReadTimeout:
        pass  # we only wanted to start it
    else:
        raise AssertionError(f"the pull should still be running: {r.text}")

    def a_third_downloaded() -> bool:
        status, done, _ = _row(llmlb_env) or ("", 0, 0)
        return status == "Downloading" and done >= f.size * 0.3

    assert wait_for(a_third_downloaded, 60), server.log()
    assert "downloading" in run_cli("node", "list", env=server.client_env()).stdout
    server.kill()
    status, recorded, total = _row(llmlb_env)
    assert status == "Downloading" and 0 < recorded < total == f.size
    missing = total - recorded

    hub.clear_faults()
    hub.reset_stats()
    server = ServerProcess(
        llmlb_env, env=env, port=server.port
    ).start()  # no user action after this
    try:
        assert wait_for(lambda: _row(llmlb_env)[0] == "Completed", 60), server.log()
        assert _requested(hub) <= missing + part
        assert _requested(hub) < f.size  # resumed, not started over
        path = llmlb_env / "models" / "acme" / "big-GGUF" / "big-F32.gguf"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == f.sha256
        assert "acme/big-GGUF" in run_cli("node", "list", env=server.client_env()).stdout
        assert "resuming the download of acme/big-GGUF" in server.log()
    finally:
        server.stop()


def test_graceful_stop_keeps_the_download_for_the_next_start(hub, llmlb_env):
    f = hub.repos["acme/big-GGUF"].files["big-F32.gguf"]
    hub.fault("big-F32.gguf", rate=1 << 20)
    env = {"HF_ENDPOINT": hub.url}
    server = ServerProcess(llmlb_env, env=env).start()
    with httpx.stream(
        "POST", server.url + "/api/pull", json={"model": "acme/big-GGUF"}, timeout=30
    ) as resp:
        for line in resp.iter_lines():
            if '"completed"' in line and '"completed": 0' not in line:
                break
    assert (
        server.stop() == 0
    )  # graceful: a slow download does not hold the shutdown (stop() kills after 15 s)
    status, recorded, _ = _row(llmlb_env)
    assert status == "Downloading" and 0 < recorded < f.size
    hub.clear_faults()
    server = ServerProcess(llmlb_env, env=env).start()
    try:
        assert wait_for(lambda: _row(llmlb_env)[0] == "Completed", 60), server.log()
        path = llmlb_env / "models" / "acme" / "big-GGUF" / "big-F32.gguf"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == f.sha256
    finally:
        server.stop()


def test_start_up_finishes_cancels_and_deletions_a_crash_interrupted(llmlb_env):
    """A crash between `rename to .trash-*` and `rmtree` leaves trash in partial/ or models/."""
    for where in ("partial", "models"):
        trash = llmlb_env / where / ".trash-0123abcd"
        trash.mkdir(parents=True)
        (trash / "half.gguf").write_bytes(b"GGUF" + bytes(1000))
    with ServerProcess(llmlb_env):
        assert wait_for(
            lambda: not [t for w in ("partial", "models") for t in (llmlb_env / w).glob(".trash-*")]
        )
