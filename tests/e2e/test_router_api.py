"""The router speaks the whole API that tools use (issue 16): show, ps, version, the legacy
embeddings route, one model by id, and /metrics with the status each client really got."""

from __future__ import annotations

import httpx
import ollama
import openai
import pytest

from llmlb import __version__
from tests.e2e.conftest import start_node
from tests.support.procs import ServerProcess, wait_for

BEAT = {"LLMLB_HEARTBEAT_MS": "300", "LLMLB_THREADS": "1"}


def requests_total(url: str, status: str) -> float:
    total = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("llmlb_router_requests_total{") and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_gguf):
    tmp = tmp_path_factory.mktemp("router-api")
    router = ServerProcess(tmp / "router", kind="router", env=BEAT).start()
    nodes = [
        start_node(
            tmp / f"node{i}", {"org/tiny": tiny_gguf}, env=BEAT, extra_args=("--router", router.url)
        )
        for i in range(2)
    ]
    assert wait_for(
        lambda: len(httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]) == 2
    )
    assert wait_for(
        lambda: all(
            n["status"] == "online"
            for n in httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]
        )
    )
    yield router, nodes
    for node in nodes:
        node.stop()
    router.stop()


def test_version_is_the_routers_own(cluster):
    router, _ = cluster
    assert httpx.get(router.url + "/api/version").json() == {"version": __version__}


def test_show_comes_from_a_node_that_has_the_model(cluster):
    router, _ = cluster
    shown = ollama.Client(host=router.url).show("org/tiny")
    assert shown.details.format == "gguf" and "completion" in (shown.capabilities or [])
    r = httpx.post(router.url + "/api/show", json={"name": "tiny"})  # older clients send name
    assert r.status_code == 200 and r.json()["name"] == "org/tiny"
    missing = httpx.post(router.url + "/api/show", json={"model": "ghost"})
    assert missing.status_code == 404 and missing.json() == {"error": "model 'ghost' not found"}


def test_ps_is_the_union_over_nodes_with_the_node_named(cluster):
    router, nodes = cluster
    ollama.Client(host=router.url).generate(
        model="org/tiny", prompt="hi", options={"num_predict": 2}
    )
    running = httpx.get(router.url + "/api/ps").json()["models"]
    assert running and all(m["name"] == "org/tiny" for m in running)
    addresses = {n.address for n in nodes}
    assert all(m["node_address"] in addresses and len(m["node"]) == 8 for m in running)
    assert ollama.Client(host=router.url).ps().models  # the official client reads it


def test_legacy_embeddings_and_one_model_by_id(cluster):
    router, _ = cluster
    r = httpx.post(router.url + "/api/embeddings", json={"model": "org/tiny", "prompt": "hello"})
    assert r.status_code == 200 and len(r.json()["embedding"]) > 0
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="x", max_retries=0)
    assert client.models.retrieve("org/tiny").id == "org/tiny"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("org/ghost")


def test_metrics_count_the_status_the_client_got(cluster):
    router, _ = cluster
    before_404, before_400 = requests_total(router.url, "404"), requests_total(router.url, "400")
    before_200 = requests_total(router.url, "200")
    assert httpx.post(router.url + "/api/chat", json={"model": "ghost"}).status_code == 404
    assert httpx.post(router.url + "/api/chat", content=b"{bad").status_code == 400
    bad_option = {"model": "org/tiny", "prompt": "x", "options": {"temperature": 9}}
    assert (
        httpx.post(router.url + "/api/generate", json=bad_option).status_code == 400
    )  # the node's
    ok = {"model": "org/tiny", "prompt": "x", "stream": False, "options": {"num_predict": 2}}
    assert httpx.post(router.url + "/api/generate", json=ok).status_code == 200
    assert requests_total(router.url, "404") == before_404 + 1
    assert requests_total(router.url, "400") == before_400 + 2
    assert requests_total(router.url, "200") == before_200 + 1
