"""A router and three real nodes: balancing, cluster views, failures and recovery."""

import asyncio
import json
import os
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.e2e.conftest import start_node
from tests.support.procs import ServerProcess, metric, run_cli, wait_for

# offline after 3 missed beats + 1 s; one thread per node
BEAT = {"LLMLB_HEARTBEAT_MS": "300", "LLMLB_THREADS": "1"}
# The cluster's nodes share one core, so that they run equally fast, as equal machines would.
# Left to the OS, three single-threaded nodes on two cores end up two on one core and one alone
# on the other, twice as fast; the balancer then rightly sends that node about half the work.
NODE_CPUS = {min(os.sched_getaffinity(0))}


def statuses(router) -> dict[int, str]:
    nodes = httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]
    return {n["port"]: n["status"] for n in nodes}


@pytest.fixture
def cluster(tmp_path, endless_gguf, tiny_gguf):
    router = ServerProcess(tmp_path / "router", kind="router", env=BEAT).start()
    nodes = []
    for i in range(3):
        models = {"org/endless": endless_gguf}
        if i == 0:
            models["org/only-here"] = tiny_gguf
        nodes.append(
            start_node(
                tmp_path / f"node{i}",
                models,
                env=BEAT,
                extra_args=("--router", router.url),
                cpus=NODE_CPUS,
            )
        )
    assert wait_for(lambda: list(statuses(router).values()).count("online") == 3), router.log()
    yield router, nodes
    for n in nodes:
        n.stop()
    router.stop()


def test_spread_views_and_failover(cluster):
    router, nodes = cluster
    env = router.client_env()
    r = run_cli("router", "nodes", env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "HOST", "STATUS", "GPU", "MODELS"]
    assert sorted(line.split()[1] for line in lines[1:]) == sorted(n.address for n in nodes)
    assert all(line.split()[2:4] == ["online", "CPU"] for line in lines[1:])
    models = run_cli("router", "models", env=env).stdout.splitlines()
    assert models[0].split() == ["MODEL", "NODES", "STATUS", "ALIAS"]
    assert models[1].split() == ["org/endless", "3", "available", "endless"]
    assert models[2].split() == ["org/only-here", "1", "available", "only-here"]

    client = openai.OpenAI(base_url=router.url + "/v1", api_key="x", max_retries=0)

    def ask(i, tokens=32):
        raw = client.chat.completions.with_raw_response.create(
            model="endless", messages=[{"role": "user", "content": f"q{i}"}], max_tokens=tokens
        )
        return raw.headers["x-llmlb-node"], raw.parse().usage.completion_tokens

    async def burst(n, tokens):  # one thread and an event loop: the client itself stays light
        aclient = openai.AsyncOpenAI(base_url=router.url + "/v1", api_key="x", max_retries=0)

        async def one(i):
            raw = await aclient.chat.completions.with_raw_response.create(
                model="endless", messages=[{"role": "user", "content": f"q{i}"}], max_tokens=tokens
            )
            return raw.headers["x-llmlb-node"], raw.parse().usage.completion_tokens

        return await asyncio.gather(*(one(i) for i in range(n)))

    assert (
        len({node for node, _ in asyncio.run(burst(6, 8))}) == 3
    )  # a first burst loads the model everywhere
    results = asyncio.run(burst(60, 8))
    assert all(tokens == 8 for _, tokens in results)
    spread = Counter(node for node, _ in results)
    assert len(spread) == 3 and max(spread.values()) <= 30, spread

    status = run_cli("router", "status", env=env).stdout
    assert status.startswith("Cluster Status: healthy\n\nNodes:      3 online / 0 offline\n")
    assert "Models:     2 available" in status and "Requests:   66 (last hour)" in status
    assert "VRAM:       -" in status

    # a node dies: requests keep succeeding, it goes offline, then its model is unavailable
    nodes[0].kill()
    with ThreadPoolExecutor(8) as pool:
        again = list(pool.map(lambda i: ask(i, 4), range(20)))
    assert all(tokens == 4 for _, tokens in again)
    assert wait_for(lambda: statuses(router)[nodes[0].port] != "online")
    assert run_cli("router", "models", env=env).stdout.splitlines()[2].split() == [
        "org/only-here",
        "0",
        "unavailable",
        "only-here",  # the alias, from the node's last heartbeat
    ]
    assert run_cli("router", "status", env=env).stdout.startswith("Cluster Status: degraded")
    gone = httpx.post(
        router.url + "/v1/chat/completions",
        json={"model": "org/only-here", "messages": [{"role": "user", "content": "x"}]},
    )
    assert gone.status_code == 503 and "no online node" in gone.json()["error"]["message"]
    assert gone.headers.get("retry-after")
    # it crashed without a goodbye: after failed probes it is in Error
    assert wait_for(lambda: statuses(router)[nodes[0].port] == "error")
    nodes[0].start()
    assert wait_for(lambda: statuses(router)[nodes[0].port] == "online")


def test_graceful_stop_is_offline(cluster):
    router, nodes = cluster
    assert nodes[1].stop() == 0
    assert wait_for(lambda: statuses(router)[nodes[1].port] == "offline")
    nodes = httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]
    assert [n["state"] for n in nodes if n["status"] == "offline"] == ["Stopped"]


def node_in_flight(node) -> int:
    return int(metric(node.url, "llmlb_in_flight"))


def test_client_hanging_up_stops_the_node(cluster):
    router, nodes = cluster
    body = {
        "model": "org/endless",
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": 100000,
        "stream": True,
    }
    ports = {
        n["id"][:8]: n["port"]
        for n in httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]
    }
    with httpx.stream("POST", router.url + "/v1/chat/completions", json=body, timeout=30) as r:
        node = next(n for n in nodes if n.port == ports[r.headers["x-llmlb-node"]])
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert node_in_flight(node) == 1
    assert wait_for(lambda: node_in_flight(node) == 0)


def test_stream_cut_midway_ends_with_an_error_event(cluster):
    router, nodes = cluster
    body = {
        "model": "org/endless",
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": 1500,
        "stream": True,
    }
    with httpx.stream("POST", router.url + "/v1/chat/completions", json=body, timeout=30) as r:
        serving = r.headers["x-llmlb-node"]
        ports = {
            n["id"][:8]: n["port"]
            for n in httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]
        }
        victim = next(n for n in nodes if n.port == ports[serving])
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        victim.kill()
        rest = [line for line in lines if line.strip()]
    assert "error" in rest[-1] and "failed during the response" in rest[-1]


def test_unknown_model_and_bad_body(cluster):
    router, _ = cluster
    r = httpx.post(router.url + "/v1/chat/completions", json={"model": "ghost", "messages": []})
    assert r.status_code == 404 and r.json()["error"]["message"] == "model 'ghost' not found"
    r = httpx.post(router.url + "/api/chat", content=b"{bad")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    tags = httpx.get(router.url + "/api/tags").json()["models"]
    assert {t["name"] for t in tags} == {"org/endless:latest", "org/only-here:latest"}
    assert {m["id"] for m in httpx.get(router.url + "/v1/models").json()["data"]} == {
        "org/endless",
        "org/only-here",
    }
    assert metric(router.url, "llmlb_router_nodes_online") == 3
    assert metric(router.url, "llmlb_router_queue_depth") == 0


def test_router_down_cli_and_node_keeps_serving(tmp_path, endless_gguf):
    port = ServerProcess(tmp_path / "r", kind="router").port  # never started
    node = start_node(
        tmp_path / "n",
        {"org/endless": endless_gguf},
        env=BEAT,
        extra_args=("--router", f"http://127.0.0.1:{port}"),
    )
    try:
        r = httpx.post(
            node.url + "/api/generate",
            json={
                "model": "endless",
                "prompt": "x",
                "stream": False,
                "options": {"num_predict": 2},
            },
            timeout=60,  # loads the model first
        )
        assert r.status_code == 200
        cli = run_cli("router", "nodes", env={**os.environ, "LLMLB_ROUTER": f"127.0.0.1:{port}"})
        assert cli.returncode == 2 and f"127.0.0.1:{port}" in cli.stderr
        # the router comes up later: the node registers by itself
        router = ServerProcess(tmp_path / "r", kind="router", port=port, env=BEAT).start()
        assert wait_for(lambda: list(statuses(router).values()) == ["online"])
        router.stop()
    finally:
        node.signal(signal.SIGINT)
        node.wait()


def test_tokens_and_keys(tmp_path, endless_gguf):
    env = {**BEAT, "LLMLB_NODE_TOKEN": "s3cret", "LLMLB_API_KEYS": "k1,k2"}
    router = ServerProcess(tmp_path / "router", kind="router", env=env).start()
    good = start_node(
        tmp_path / "good",
        {"org/endless": endless_gguf},
        env=env,
        extra_args=("--router", router.url),
    )
    bad = start_node(
        tmp_path / "bad",
        {"org/endless": endless_gguf},
        env={**BEAT, "LLMLB_NODE_TOKEN": "wrong"},
        extra_args=("--router", router.url),
    )
    try:
        headers = {"Authorization": "Bearer k1"}
        assert wait_for(
            lambda: (
                len(httpx.get(router.url + "/admin/cluster/nodes", headers=headers).json()["nodes"])
                == 1
            )
        )
        assert httpx.get(router.url + "/admin/cluster/nodes").status_code == 401
        body = {"model": "endless", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
        assert httpx.post(router.url + "/v1/chat/completions", json=body).status_code == 401
        assert (
            httpx.post(
                router.url + "/v1/chat/completions",
                json=body,
                headers={"X-API-Key": "k2"},
                timeout=60,  # loads the model first
            ).status_code
            == 200
        )
        cli = run_cli("router", "nodes", env={**router.client_env(), "LLMLB_API_KEY": "k1"})
        assert cli.returncode == 0 and good.address in cli.stdout and bad.address not in cli.stdout
        assert "k1" not in router.log() and "k2" not in router.log()
        recent = httpx.get(router.url + "/admin/cluster/requests", headers=headers).json()[
            "requests"
        ]
        assert recent[0]["key_id"].startswith("key-") and "k2" not in json.dumps(recent)
    finally:
        good.stop()
        bad.stop()
        router.stop()
