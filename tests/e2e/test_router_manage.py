"""ollama's model management through the router (issue 24): pull, create, blobs, copy, delete
and stop go to the nodes they concern and say what each node answered; push is a clear 400;
HEAD / answers on both servers; the router's /v1/models carries the nodes' real `created`.

A router with two real nodes that pull from the test Hub; models are tiny generated GGUFs
(plumbing only: nothing here depends on what a model says).
"""

from __future__ import annotations

import hashlib
import json

import httpx
import ollama
import pytest

from tests.e2e.conftest import start_node
from tests.support.hub_server import HubServer
from tests.support.procs import ServerProcess, wait_for
from tests.support.tiny_model import make_tiny_gguf

BEAT = {"LLMLB_HEARTBEAT_MS": "300"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_gguf):
    server = HubServer(tmp_path_factory.mktemp("hub")).start()
    for repo in ("acme/one-GGUF", "acme/two-GGUF", "acme/three-GGUF"):
        server.add_repo(repo, {"tiny-Q8_0.gguf": tiny_gguf})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_gguf, hub):
    tmp = tmp_path_factory.mktemp("manage")
    router = ServerProcess(tmp / "router", kind="router", env=BEAT).start()
    nodes = [
        start_node(
            tmp / f"node{i}",
            {"org/tiny": tiny_gguf},
            env={**BEAT, "HF_ENDPOINT": hub.url},
            extra_args=("--router", router.url),
        )
        for i in range(2)
    ]
    assert wait_for(lambda: len(listed(router)) == 2 and all(n["models"] for n in listed(router)))
    yield router, nodes
    for node in nodes:
        node.stop()
    router.stop()


def listed(router) -> list[dict]:
    return [
        n
        for n in httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]
        if n["status"] == "online"
    ]


def short_ids(cluster) -> list[str]:
    """Each node's short id, in the order of the fixture's nodes."""
    router, nodes = cluster
    by_port = {n["port"]: n["id"][:8] for n in listed(router)}
    return [by_port[node.port] for node in nodes]


def has(node, model: str) -> bool:
    tags = httpx.get(node.url + "/api/tags").json()["models"]
    return any(m["name"].removesuffix(":latest") == model for m in tags)


def lines(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def test_head_root_answers_200_on_node_and_router(cluster):
    router, nodes = cluster
    for url in (router.url, nodes[0].url):
        r = httpx.head(url + "/")
        assert r.status_code == 200 and r.content == b""


def test_pull_goes_to_every_online_node_and_names_each(cluster):
    router, nodes = cluster
    ids = short_ids(cluster)
    r = httpx.post(router.url + "/api/pull", json={"model": "acme/one-GGUF"}, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    events = lines(r)
    progress, last = events[:-1], events[-1]
    assert {e["node"] for e in progress} == set(ids)
    assert {e["status"] for e in progress if e["node"] == ids[0]} >= {"pulling manifest", "success"}
    assert last["status"] == "success"
    assert sorted(n["node"] for n in last["nodes"]) == sorted(ids)
    assert all(n["status"] == 200 for n in last["nodes"])
    assert all(has(node, "acme/one-GGUF") for node in nodes)
    # the ollama client, not streamed: one status
    assert ollama.Client(host=router.url).pull("acme/one-GGUF", stream=False).status == "success"


def test_pull_to_a_named_node_only(cluster):
    router, nodes = cluster
    ids = short_ids(cluster)
    r = httpx.post(
        router.url + "/api/pull",
        params={"node": ids[1]},
        json={"model": "acme/two-GGUF", "stream": False},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert [n["node"] for n in r.json()["nodes"]] == [ids[1]]
    assert has(nodes[1], "acme/two-GGUF") and not has(nodes[0], "acme/two-GGUF")
    unknown = httpx.post(router.url + "/api/pull", params={"node": "zzzz"}, json={"model": "x"})
    assert unknown.status_code == 400
    assert unknown.json() == {"error": "node 'zzzz' is not registered with this router"}


def test_a_failed_pull_says_which_nodes_failed_and_why(cluster):
    router, _ = cluster
    ids = short_ids(cluster)
    r = httpx.post(router.url + "/api/pull", json={"model": "acme/nope", "stream": False})
    assert r.status_code == 404
    body = r.json()
    assert body["error"].startswith("pull failed on 2 of 2 nodes: ")
    assert all(i in body["error"] for i in ids) and "not found" in body["error"]
    assert {n["status"] for n in body["nodes"]} == {404}
    streamed = lines(httpx.post(router.url + "/api/pull", json={"model": "acme/nope"}))
    assert {e["node"] for e in streamed if e.get("status") == "failed"} == set(ids)
    assert streamed[-1]["error"].startswith("pull failed on 2 of 2 nodes")
    with pytest.raises(ollama.ResponseError, match="pull failed on 2 of 2 nodes"):
        list(ollama.Client(host=router.url).pull("acme/nope", stream=True))


def test_blobs_create_copy_and_delete_through_the_router(cluster, tmp_path):
    router, nodes = cluster
    client = ollama.Client(host=router.url, timeout=120)
    gguf = make_tiny_gguf(tmp_path / "made.gguf", license="MIT")
    digest = client.create_blob(gguf)
    assert digest == "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    for url in (router.url, nodes[0].url, nodes[1].url):
        assert httpx.head(f"{url}/api/blobs/{digest}").status_code == 200
    assert client.create(model="made", files={"made.gguf": digest}).status == "success"
    assert all(has(node, "made") for node in nodes)
    assert client.copy("made", "made-2").status == "success"
    assert all(has(node, "made-2") for node in nodes)
    # at once, before any heartbeat lists the copy: the delete still reaches every node
    deleted = httpx.request("DELETE", router.url + "/api/delete", json={"model": "made-2"})
    assert deleted.status_code == 200 and [n["status"] for n in deleted.json()["nodes"]] == [
        200,
        200,
    ]
    assert not any(has(node, "made-2") for node in nodes) and all(has(n, "made") for n in nodes)
    with pytest.raises(ollama.ResponseError) as gone:
        client.delete("never-made")
    assert gone.value.status_code == 404 and "delete failed on 2 of 2 nodes" in gone.value.error


def test_a_blob_one_node_lacks_is_404_and_an_upload_reaches_it(cluster, tmp_path):
    router, nodes = cluster
    data = b"blob only on node 0"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert httpx.post(f"{nodes[0].url}/api/blobs/{digest}", content=data).status_code == 201
    assert httpx.head(f"{router.url}/api/blobs/{digest}").status_code == 404
    r = httpx.post(f"{router.url}/api/blobs/{digest}", content=data)
    assert r.status_code == 201
    assert sorted(n["status"] for n in r.json()["nodes"]) == [200, 201]
    assert httpx.head(f"{router.url}/api/blobs/{digest}").status_code == 200
    wrong = httpx.post(f"{router.url}/api/blobs/{'sha256:' + '0' * 64}", content=data)
    assert wrong.status_code == 400 and "2 of 2 nodes" in wrong.json()["error"]
    bad = httpx.head(f"{router.url}/api/blobs/sha256:nothex")
    assert bad.status_code == 400


def test_stop_unloads_the_model_where_it_is_loaded(cluster):
    router, nodes = cluster
    client = ollama.Client(host=router.url, timeout=120)
    client.generate(model="org/tiny", prompt="hi", options={"num_predict": 2})
    loaded = [n for n in nodes if httpx.get(n.url + "/api/ps").json()["models"]]
    assert len(loaded) == 1
    r = httpx.post(router.url + "/api/stop", json={"model": "org/tiny"})
    assert r.status_code == 200, r.text
    answered = {n["address"]: n["status"] for n in r.json()["nodes"]}
    idle = next(n for n in nodes if n is not loaded[0])
    assert answered == {loaded[0].address: 200, idle.address: 404}  # not loaded there
    assert not httpx.get(loaded[0].url + "/api/ps").json()["models"]
    again = httpx.post(router.url + "/api/stop", json={"model": "org/tiny"})
    assert again.status_code == 404 and "is not loaded" in again.json()["error"]


def test_push_is_a_clear_400_on_node_and_router(cluster):
    router, nodes = cluster
    for url in (router.url, nodes[0].url):
        with pytest.raises(ollama.ResponseError) as refused:
            ollama.Client(host=url).push("org/tiny", stream=False)
        assert refused.value.status_code == 400
        assert "Hugging Face" in refused.value.error and "hf upload" in refused.value.error


def test_v1_models_created_times_come_from_the_nodes(cluster):
    router, nodes = cluster
    routed = {m["id"]: m["created"] for m in httpx.get(router.url + "/v1/models").json()["data"]}
    own = [
        {m["id"]: m["created"] for m in httpx.get(n.url + "/v1/models").json()["data"]}
        for n in nodes
    ]
    assert routed["org/tiny"] == min(o["org/tiny"] for o in own) > 0
    one = httpx.get(router.url + "/v1/models/org/tiny").json()
    assert one["created"] == routed["org/tiny"]
