"""Keep-alive, eviction, queueing, disconnects and shutdown on a real node server."""

import json
import signal
import threading

import httpx
import pytest

from llmlb.engine.llama_cpp import gpu_offload_supported
from llmlb.store import catalog, db
from tests.e2e.conftest import start_node
from tests.support.procs import metric, run_cli, wait_for


def loaded(server) -> dict:
    return {m["name"]: m for m in httpx.get(server.url + "/api/ps").json()["models"]}


def gen(server, model, n=2, **extra):
    r = httpx.post(
        server.url + "/api/generate",
        json={
            "model": model,
            "prompt": "hi",
            "stream": False,
            "options": {"num_predict": n},
            **extra,
        },
        timeout=60,
    )
    return r


@pytest.fixture
def models(tiny_gguf, slow_gguf):
    return {
        "org/a": tiny_gguf,
        "org/b": tiny_gguf,
        "org/c": tiny_gguf,
        "org/slow": slow_gguf,
    }


@pytest.fixture
def node(tmp_path, models):
    server = start_node(
        tmp_path / "home",
        models,
        env={"LLMLB_MAX_LOADED_MODELS": "2", "LLMLB_MAX_QUEUE": "1", "LLMLB_NUM_PARALLEL": "2"},
    )
    yield server
    server.stop()


def test_ps_stop_cli_and_keep_alive(node):
    env = node.client_env()
    assert gen(node, "org/a", keep_alive="1s").status_code == 200
    assert gen(node, "org/b", keep_alive=-1).status_code == 200
    ps = run_cli("node", "ps", env=env)
    assert ps.returncode == 0, ps.stderr
    lines = ps.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "PROCESSOR", "UNTIL", "VRAM", "TEMP"]
    row_b = next(line for line in lines if line.startswith("org/b "))
    # llama.cpp's build decides where layers run; NVML (a stand-in without GPUs) the last two
    processor = "100% GPU" if gpu_offload_supported() else "100% CPU"
    assert processor in row_b and "Forever" in row_b and row_b.split()[-2:] == ["-", "-"]
    # org/a had a 1 s keep-alive: it unloads by itself
    assert wait_for(lambda: "org/a" not in loaded(node))
    assert "org/b" in loaded(node)
    r = run_cli("node", "stop", "b", env=env)
    assert r.returncode == 0, r.stderr
    assert "org/b" not in loaded(node)
    r = run_cli("node", "stop", "b", env=env)
    assert r.returncode == 1 and r.stderr == "Error: model 'b' is not loaded\n"
    r = run_cli("node", "stop", "ghost", env=env)
    assert r.returncode == 1 and "not found" in r.stderr


def test_keep_alive_zero_unloads_after_the_request(node):
    assert gen(node, "org/a", keep_alive=0).status_code == 200
    assert wait_for(lambda: "org/a" not in loaded(node))


def test_least_recently_used_idle_model_is_evicted(node):
    for name in ("org/a", "org/b"):
        assert gen(node, name).status_code == 200
    gen(node, "org/a")  # a is now more recent than b
    assert gen(node, "org/c").status_code == 200
    assert set(loaded(node)) == {"org/a", "org/c"}


def _hold(node, model="org/slow"):
    """Start a long stream and return (client, stream) once the first token arrived.

    The line iterator rides along on the stream object: if it were garbage-collected,
    httpx would close the response and the server would see a disconnect."""
    client = httpx.Client(timeout=60)
    cm = client.stream(
        "POST",
        node.url + "/api/generate",
        json={"model": model, "prompt": "go", "options": {"num_predict": 4000}},
    )
    response = cm.__enter__()
    lines = response.iter_lines()
    first = json.loads(next(lines))
    assert "response" in first
    cm.lines = lines
    return client, cm


def test_queue_full_is_503_and_disconnect_frees_the_model(node):
    # two parallel sequences (LLMLB_NUM_PARALLEL=2): both streams run at once
    first_client, first = _hold(node)
    second_client, second = _hold(node)
    results = {}
    queued = threading.Thread(
        target=lambda: results.setdefault("queued", gen(node, "org/slow", n=3))
    )
    queued.start()
    assert wait_for(lambda: metric(node.url, "llmlb_queue_depth") == 1)
    full = gen(node, "org/slow", n=3)  # 2 running + 1 queued (LLMLB_MAX_QUEUE=1): no room
    assert full.status_code == 503
    assert "busy" in full.json()["error"] and full.headers.get("retry-after")
    first.__exit__(None, None, None)  # the first client goes away mid-stream
    first_client.close()
    queued.join(60)  # its sequence went to the waiting request, while the second still streams
    assert results["queued"].status_code == 200 and results["queued"].json()["eval_count"] == 3
    assert json.loads(next(second.lines))["done"] is False
    second.__exit__(None, None, None)
    second_client.close()
    assert wait_for(lambda: not loaded(node)["org/slow"]["busy"])


def test_rm_of_a_loaded_model_unloads_it_first(node):
    gen(node, "org/c")
    assert "org/c" in loaded(node)
    r = run_cli("node", "rm", "org/c", env=node.client_env())
    assert r.returncode == 0, r.stderr
    assert "org/c" not in loaded(node)


def test_no_gpu_is_reported_cleanly(node):
    """The node's NVML is a stand-in without GPUs (see procs.ServerProcess), as on a machine
    without an NVIDIA driver; tests/e2e/test_gpu_telemetry.py has the machine with GPUs."""
    gen(node, "org/a")
    gpu = httpx.get(node.url + "/api/ps").json()["gpu"]
    assert (
        gpu["gpu_name"] is None and gpu["vram_total_bytes"] == 0 and gpu["gpu_temperature"] is None
    )
    assert "ERROR" not in node.log() and "Traceback" not in node.log()


def test_sigint_during_a_stream_exits_cleanly(tmp_path, slow_gguf):
    home = tmp_path / "home"
    server = start_node(home, {"org/slow": slow_gguf})
    client, _cm = _hold(server)
    server.signal(signal.SIGINT)
    assert server.wait(20) == 0, server.log()
    assert "Traceback" not in server.log()  # the stream ended, it was not torn down
    client.close()
    engine = db.open_node_catalog(home / "llmlb.db")
    from sqlmodel import select

    from llmlb.store.models import Node

    with db.session(engine) as s:
        nodes = s.exec(select(Node)).all()
    assert [n.status for n in nodes] == ["Stopped"]
    assert catalog.find(engine, "org/slow") is not None
