"""`llmlb node pull` as a user runs it: a real node server, a real (local) Hugging Face Hub."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support import tiny_hf
from tests.support.hub_server import HubServer
from tests.support.procs import LLMLB, ServerProcess, run_cli, wait_for
from tests.support.tiny_model import TinySpec, make_tiny_gguf
from tests.support.tiny_safetensors import make_tiny_safetensors

pytestmark = pytest.mark.e2e
SLOW = 3 << 20  # bytes per second per connection for "slow" downloads


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    src = tmp_path_factory.mktemp("hub-src")
    server = HubServer(tmp_path_factory.mktemp("hub")).start()
    q8 = make_tiny_gguf(src / "tiny-Q8_0.gguf", dtype="Q8_0", license="MIT")
    f16 = make_tiny_gguf(src / "tiny-F16.gguf", dtype="F16", license="MIT")
    server.add_repo(
        "acme/tiny-GGUF", {"tiny-Q8_0.gguf": q8, "tiny-F16.gguf": f16, "README.md": b"# tiny\n"}
    )
    server.add_repo("acme/gated-GGUF", {"gated-Q8_0.gguf": q8}, gated=True)
    server.add_repo("acme/huge-GGUF", {"huge-Q4_K_M.gguf": q8})
    server.add_repo("acme/bad-GGUF", {"bad-Q8_0.gguf": q8})
    big = make_tiny_gguf(src / "big-F32.gguf", TinySpec(n_embd=256, n_layer=4, n_ff=2048, seed=3))
    server.add_repo("acme/big-GGUF", {"big-F32.gguf": big})
    st, _ = make_tiny_safetensors(src / "st", shards=2)
    server.add_repo("acme/tiny-st", {p.name: p for p in sorted(st.iterdir())})
    llama = tiny_hf.make_checkpoint(src / "llama-st", "llama")
    server.add_repo("acme/tiny-llama", {p.name: p for p in sorted(llama.iterdir())})
    yield server
    server.stop()


@pytest.fixture
def node(hub, llmlb_env):
    hub.clear_faults()
    hub.reset_stats()
    with ServerProcess(
        llmlb_env, env={"HF_ENDPOINT": hub.url, "LLMLB_PULL_STALL_SECS": "5"}
    ) as server:
        yield server


def cli(server, *args, env: dict | None = None, timeout: float = 120):
    return run_cli(*args, env={**server.client_env(), **(env or {})}, timeout=timeout)


def tags(server) -> dict:
    return {
        m["name"].removesuffix(":latest"): m
        for m in httpx.get(server.url + "/api/tags").json()["models"]
    }


def cdn_requests(hub) -> list:
    return [r for r in hub.stats.requests if r[1].startswith("/_cdn/")]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pull_gguf_then_list_and_show(node, hub, llmlb_env):
    r = cli(node, "node", "pull", "acme/tiny-GGUF")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    digest = hub.repos["acme/tiny-GGUF"].files["tiny-Q8_0.gguf"].sha256
    assert lines[0] == "pulling manifest"
    assert "pulling tiny-Q8_0.gguf... 100% ▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓ 132 KB" in r.stdout
    assert lines[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    path = llmlb_env / "models" / "acme" / "tiny-GGUF" / "tiny-Q8_0.gguf"
    assert sha256(path) == digest
    assert not any((llmlb_env / "partial").rglob("*.gguf"))
    listed = cli(node, "node", "list").stdout
    assert "acme/tiny-GGUF" in listed
    shown = cli(node, "node", "show", "acme/tiny-GGUF").stdout
    assert "Quantization: Q8_0" in shown and "Format: GGUF" in shown and "License: MIT" in shown
    assert tags(node)["acme/tiny-GGUF"]["digest"] == digest

    # An explicit tag is another model; a second pull of an installed one downloads nothing.
    r = cli(node, "node", "pull", "hf.co/acme/tiny-GGUF:f16")
    assert r.returncode == 0, r.stderr
    assert "Quantization: F16" in cli(node, "node", "show", "acme/tiny-GGUF/F16").stdout
    hub.reset_stats()
    assert cli(node, "node", "pull", "acme/tiny-GGUF").stdout.splitlines()[-1] == "success"
    assert cdn_requests(hub) == []


def test_pull_safetensors_then_list_and_show(node, hub, llmlb_env):
    r = cli(node, "node", "pull", "https://huggingface.co/acme/tiny-st")
    assert r.returncode == 0, r.stderr
    target = llmlb_env / "models" / "acme" / "tiny-st"
    src = hub.repos["acme/tiny-st"].files
    assert sorted(p.name for p in target.iterdir()) == sorted(src)
    for name, f in src.items():
        assert (target / name).read_bytes() == f.path.read_bytes()
    assert "acme/tiny-st" in cli(node, "node", "list").stdout
    shown = cli(node, "node", "show", "acme/tiny-st").stdout
    assert "Format: Safetensors" in shown and "Context Length: 4096" in shown


def test_a_pulled_safetensors_model_is_converted_once_and_runs(node, llmlb_env):
    r = cli(node, "node", "pull", "acme/tiny-llama")
    assert r.returncode == 0, r.stderr
    target = llmlb_env / "models" / "acme" / "tiny-llama"
    assert sorted(p.name for p in target.iterdir()) == [
        "config.json",
        "model-F16.gguf",
        "tokenizer.model",
        "tokenizer_config.json",
    ]  # the shards went once converted
    shown = cli(node, "node", "show", "acme/tiny-llama").stdout
    assert "Format: GGUF (converted from Safetensors, float32)" in shown
    reply = httpx.post(
        node.url + "/api/generate",
        json={"model": "acme/tiny-llama", "prompt": "hi", "raw": True, "stream": False,
              "options": {"num_predict": 3}},
        timeout=120,
    )  # fmt: skip
    assert reply.status_code == 200 and reply.json()["eval_count"] == 3


def test_a_safetensors_model_that_cannot_be_converted_says_why_when_run(node, llmlb_env):
    r = cli(node, "node", "pull", "acme/tiny-st")  # a checkpoint with no attention at all
    assert r.returncode == 0, r.stderr
    r = cli(node, "node", "run", "acme/tiny-st", "hi")
    assert r.returncode == 1
    assert r.stderr.startswith(
        "Error: model 'acme/tiny-st' is Safetensors and could not be converted to GGUF: "
    )


def test_gated_repo_needs_hf_token(node, hub):
    r = cli(node, "node", "pull", "acme/gated-GGUF")
    assert r.returncode == 1
    assert r.stderr.strip() == "Error: Unauthorized. Set HF_TOKEN environment variable."
    assert cdn_requests(hub) == []
    r = cli(node, "node", "pull", "acme/gated-GGUF", env={"HF_TOKEN": hub.token})
    assert r.returncode == 0, r.stderr
    assert "acme/gated-GGUF" in tags(node)


def test_missing_repo_and_bad_names(node, hub):
    r = cli(node, "node", "pull", "acme/nope")
    assert (r.returncode, r.stderr.strip()) == (
        1,
        f"Error: model 'acme/nope' not found at {hub.url}",  # the endpoint it asked
    )
    for bad in ("acme/../x", "llama3", "acme/re po", "https://example.com/a/b"):
        r = cli(node, "node", "pull", bad)
        assert r.returncode == 1 and r.stderr.startswith("Error: invalid model name"), (
            bad,
            r.stderr,
        )
        assert len(r.stderr.strip().splitlines()) == 1


def test_unreachable_hub_is_one_clear_line_that_names_the_mirror_setting(llmlb_env):
    from tests.support.procs import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    with ServerProcess(llmlb_env, env={"HF_ENDPOINT": dead}) as server:
        r = cli(server, "node", "pull", "acme/tiny-GGUF")
    assert r.returncode == 1
    assert r.stderr.startswith(f"Error: could not reach Hugging Face at {dead}: ")
    assert len(r.stderr.strip().splitlines()) == 1
    # and how to get past it when this machine cannot reach the Hub
    assert r.stderr.endswith(
        "; offline or blocked? Pull through a mirror: set HF_ENDPOINT (README: Mirrors)\n"
    )


def test_no_disk_space_is_an_error_before_the_first_byte(node, hub):
    hub.fault("huge-Q4_K_M.gguf", declare_size=10**16)  # the Hub says 10 PB: no disk has that free
    r = cli(node, "node", "pull", "acme/huge-GGUF")
    assert r.returncode == 1
    assert r.stderr.startswith(
        "Error: not enough disk space to pull 'acme/huge-GGUF': it needs 10000.0 TB"
    )
    assert " is free in " in r.stderr
    assert cdn_requests(hub) == [] and "acme/huge-GGUF" not in tags(node)


def test_corrupted_download_fails_and_registers_nothing(node, hub, llmlb_env):
    hub.fault("bad-Q8_0.gguf", flip_byte=1000)
    r = cli(node, "node", "pull", "acme/bad-GGUF")
    assert r.returncode == 1
    assert r.stderr.startswith("Error: digest mismatch for bad-Q8_0.gguf")
    assert "must be downloaded again" in r.stderr
    assert "acme/bad-GGUF" not in tags(node)
    assert not (llmlb_env / "models" / "acme" / "bad-GGUF").exists()
    assert not list((llmlb_env / "partial").rglob("*.gguf"))
    row = (
        sqlite3.connect(llmlb_env / "llmlb.db")
        .execute("select status, error from download_progress where model_name='acme/bad-GGUF'")
        .fetchone()
    )
    assert row[0] == "Failed" and "digest mismatch" in row[1]
    hub.clear_faults()  # pulling again starts over and succeeds
    assert cli(node, "node", "pull", "acme/bad-GGUF").returncode == 0


def _pull_in_background(server, model: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*LLMLB, "node", "pull", model],
        env=server.client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_downloading(server, name: str, timeout: float = 30) -> dict:
    def started() -> bool:
        m = tags(server).get(name)
        return bool(m and m.get("downloading") and m["downloading"]["completed"] > 0)

    assert wait_for(started, timeout, every=0.05), f"{name} never started downloading"
    return tags(server)[name]


def _wait_installed(server, name: str, timeout: float = 60) -> None:
    def installed() -> bool:
        m = tags(server).get(name)
        return bool(m and not m.get("downloading"))

    assert wait_for(installed, timeout), f"{name} was never installed"


def test_ctrl_c_detaches_and_a_second_pull_attaches(node, hub, llmlb_env):
    hub.fault("big-F32.gguf", rate=SLOW)
    first = _pull_in_background(node, "acme/big-GGUF")
    _wait_downloading(node, "acme/big-GGUF")
    assert "downloading" in cli(node, "node", "list").stdout
    os.killpg(first.pid, signal.SIGINT)
    out, err = first.communicate(timeout=30)
    assert first.returncode == 130, (out, err)
    assert "continues in the background" in err and "llmlb node pull acme/big-GGUF" in err
    second = cli(node, "node", "pull", "acme/big-GGUF")  # attaches, shows progress to the end
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1] == "success"
    size = hub.repos["acme/big-GGUF"].files["big-F32.gguf"].size
    asked = sum(
        int(r[2].split("-")[1]) - int(r[2].split("=")[1].split("-")[0]) + 1
        for r in cdn_requests(hub)
    )
    assert asked == size  # one download, not two
    path = llmlb_env / "models" / "acme" / "big-GGUF" / "big-F32.gguf"
    assert sha256(path) == hub.repos["acme/big-GGUF"].files["big-F32.gguf"].sha256


def test_rm_cancels_a_running_download(node, hub, llmlb_env):
    hub.fault("big-F32.gguf", rate=SLOW // 4)
    puller = _pull_in_background(node, "acme/big-GGUF")
    _wait_downloading(node, "acme/big-GGUF")
    assert any((llmlb_env / "partial").rglob("big-F32.gguf"))
    r = cli(node, "node", "rm", "acme/big-GGUF")
    assert r.returncode == 0, r.stderr
    _out, err = puller.communicate(timeout=30)
    assert puller.returncode == 1 and "cancelled" in err
    assert "acme/big-GGUF" not in tags(node)
    assert not any((llmlb_env / "partial").rglob("*.gguf"))
    assert not (llmlb_env / "models" / "acme" / "big-GGUF").exists()
    r = cli(node, "node", "rm", "acme/big-GGUF")
    assert (r.returncode, r.stderr.strip()) == (1, "Error: model 'acme/big-GGUF' not found")


def test_api_pull_is_ollama_compatible(node, hub):
    import ollama

    client = ollama.Client(host=node.url)
    events = list(client.pull("acme/tiny-GGUF", stream=True))
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    files = [e for e in events if e.digest]
    assert files[-1].completed == files[-1].total > 0
    assert client.pull("acme/tiny-GGUF", stream=False).status == "success"
    with pytest.raises(ollama.ResponseError) as info:
        client.pull("acme/nope")
    assert info.value.status_code == 404
    body = httpx.post(node.url + "/api/pull", json={"model": "acme/nope"}).json()
    assert body == {"error": f"model 'acme/nope' not found at {hub.url}"}
    r = httpx.post(node.url + "/api/pull", content=b"[1]")
    assert r.status_code == 400 and json.loads(r.text)["error"]
