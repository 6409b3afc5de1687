"""The engine's edges on a real node with tiny models: no chat template, prompts too long to
tokenize, a client that leaves during a long prompt, memory that a setting cannot fit."""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest

from tests.e2e.conftest import NodeSpec, start_node
from tests.support.procs import wait_for
from tests.support.tiny_model import TinySpec, make_tiny_gguf


def loaded(server) -> dict:
    return {m["name"]: m for m in httpx.get(server.url + "/api/ps").json()["models"]}


def full_log(server) -> str:
    return server.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def base_gguf(tmp_path_factory):
    """A base model: no chat template in its GGUF (like Gemma 3 270M base)."""
    return make_tiny_gguf(tmp_path_factory.mktemp("base") / "base.gguf", chat_template=None)


@pytest.fixture(scope="module")
def long_gguf(tmp_path_factory):
    """An 8k context whose full prompt takes seconds to evaluate, even on a fast machine."""
    spec = TinySpec(n_embd=256, n_layer=8, n_ff=512, n_head=4, n_head_kv=4,
                    context_length=8192, never_eos=True, seed=3)  # fmt: skip
    return make_tiny_gguf(tmp_path_factory.mktemp("long") / "long.gguf", spec)


NODE = NodeSpec(
    {"org/tiny": "tiny_gguf", "org/base": "base_gguf", "org/long": "long_gguf"},
    env={"LLMLB_NUM_PARALLEL": "1", "LLMLB_CONTEXT_LENGTH": "8192"},
)


def test_chat_on_a_model_without_a_chat_template_is_a_clear_400(node):
    message = "model 'org/base' has no chat template; use /api/generate (raw completion)"
    msgs = [{"role": "user", "content": "hi"}]
    r = httpx.post(node.url + "/api/chat", json={"model": "org/base", "messages": msgs},
                   timeout=60)  # fmt: skip
    assert r.status_code == 400 and r.json() == {"error": message}
    r = httpx.post(node.url + "/v1/chat/completions",
                   json={"model": "org/base", "messages": msgs, "max_tokens": 2}, timeout=60)  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["message"] == message
    assert "org/base" not in loaded(node)  # refused from its metadata: never loaded for it
    # /api/generate falls back to the prompt as it is (ollama's default template)
    r = httpx.post(node.url + "/api/generate", json={"model": "org/base", "prompt": "abc",
                   "stream": False, "options": {"num_predict": 3}}, timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["prompt_eval_count"] == 5  # <s> ▁ a b c: no template around it
    assert r.json()["eval_count"] >= 1


def test_a_60_mib_prompt_is_refused_before_it_is_tokenized(node):
    # tokenizing it took minutes before: the byte count alone shows it cannot fit
    huge = "a" * (60 * 1024 * 1024)
    r = httpx.post(node.url + "/api/generate", json={"model": "org/tiny", "prompt": huge,
                   "stream": False}, timeout=120)  # fmt: skip
    assert r.status_code == 400
    # (refused while the chat template renders it: past the most 2048 tokens can hold)
    assert re.match(r"the prompt is more than \d+ bytes, more than 2048 tokens", r.json()["error"])
    r = httpx.post(node.url + "/v1/chat/completions", json={"model": "org/tiny",
                   "messages": [{"role": "user", "content": huge}]}, timeout=120)  # fmt: skip
    assert r.status_code == 400 and "context window" in r.json()["error"]["message"]
    # and the model serves the next request at once
    r = httpx.post(node.url + "/api/generate", json={"model": "org/tiny", "prompt": "hi",
                   "stream": False, "options": {"num_predict": 2}}, timeout=60)  # fmt: skip
    assert r.status_code == 200 and r.json()["eval_count"] == 2
    assert not loaded(node)["org/tiny"]["busy"]


def test_a_prompt_over_the_context_in_tokens_is_a_400(node):
    r = httpx.post(node.url + "/api/generate", json={"model": "org/tiny", "prompt": "ab " * 1200,
                   "stream": False}, timeout=60)  # fmt: skip
    assert r.status_code == 400
    assert (
        r.json()["error"].startswith("the prompt is ")
        and "tokens; the context window" in (r.json()["error"])
    )


def test_a_client_that_leaves_during_a_long_prompt_stops_its_evaluation(node):
    prompt = "x " * 3900  # 7,802 tokens: four decodes of up to 2,048 tokens, seconds each
    body = json.dumps({"model": "org/long", "prompt": prompt, "raw": True,
                       "options": {"num_predict": 4}}).encode()  # fmt: skip
    head = (f"POST /api/generate HTTP/1.1\r\nHost: {node.address}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
    with socket.create_connection(("127.0.0.1", node.port)) as sock:
        sock.sendall(head.encode() + body)
        # its evaluation has begun; no byte of the answer exists yet
        started = "org/long: evaluating a long prompt: 7802 tokens, 0 of them cached"
        assert wait_for(lambda: started in full_log(node), 120)
    # the client is gone, long before its prompt is through: the decode in flight stops
    stopped = "org/long: stopped a decode whose clients all went away"
    assert wait_for(lambda: stopped in full_log(node), 60)
    assert wait_for(lambda: not loaded(node)["org/long"]["busy"], 30)
    r = httpx.post(node.url + "/api/generate", json={"model": "org/long", "prompt": "go",
                   "stream": False, "options": {"num_predict": 2}}, timeout=60)  # fmt: skip
    assert r.status_code == 200 and r.json()["eval_count"] == 2


def test_kv_cache_grows_with_num_parallel_in_ps(tmp_path, tiny_gguf):
    sizes = {}
    for parallel in (1, 4):
        server = start_node(tmp_path / f"home{parallel}", {"org/tiny": tiny_gguf},
                            env={"LLMLB_NUM_PARALLEL": str(parallel)})  # fmt: skip
        try:
            r = httpx.post(server.url + "/api/generate", json={"model": "org/tiny", "prompt": "a",
                           "stream": False, "options": {"num_predict": 1}}, timeout=60)  # fmt: skip
            assert r.status_code == 200
            row = loaded(server)["org/tiny"]
            assert row["runner_bytes"] > 0 and row["size"] > row["runner_bytes"]
            sizes[parallel] = row["size"] - row["runner_bytes"]
        finally:
            server.stop()
    # f16 keys and values: 2 layers x 4 heads x (16 + 16) dims x 2 bytes x 2,048 tokens
    assert sizes[4] - sizes[1] == 3 * 2 * 4 * 32 * 2 * 2048


def test_a_setting_that_cannot_fit_in_memory_is_refused_before_loading(tmp_path):
    spec = TinySpec(n_embd=256, n_layer=8, n_ff=256, n_head=4, n_head_kv=4,
                    context_length=131072)  # fmt: skip
    model = make_tiny_gguf(tmp_path / "wide.gguf", spec)
    env = {"LLMLB_NUM_PARALLEL": "256", "LLMLB_CONTEXT_LENGTH": "131072"}
    server = start_node(tmp_path / "home", {"org/wide": model}, env=env)
    try:
        r = httpx.post(server.url + "/api/generate", json={"model": "org/wide", "prompt": "a",
                       "stream": False}, timeout=60)  # fmt: skip
        # 256 x 131,072 tokens x 8 layers x 4 heads x 128 dims x 2 bytes = 274.9 GB of KV cache,
        # and 0.1 GB for a runner process before one has said what it takes
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error.startswith("not enough memory to load 'org/wide': it needs 275.0 GB")
        assert "256 x 131072 tokens of context" in error and "LLMLB_NUM_PARALLEL" in error
        assert "loaded org/wide" not in server.log()
        assert json.loads(httpx.get(server.url + "/api/ps").text)["models"] == []
    finally:
        server.stop()


def test_llama_cpp_log_lines_reach_the_log_only_with_llmlb_debug(tmp_path, tiny_gguf):
    logs = {}
    for debug in ("0", "1"):
        server = start_node(tmp_path / f"home{debug}", {"org/tiny": tiny_gguf},
                            env={"LLMLB_DEBUG": debug})  # fmt: skip
        try:
            r = httpx.post(server.url + "/api/generate", json={"model": "org/tiny", "prompt": "a",
                           "stream": False, "options": {"num_predict": 1}}, timeout=60)  # fmt: skip
            assert r.status_code == 200
        finally:
            server.stop()
        logs[debug] = full_log(server)
    assert "loaded org/tiny (chat)" in logs["0"] and "llama_model_loader" not in logs["0"]
    assert "llmlb.llama_cpp" in logs["1"] and "llama_model_loader: loaded meta data" in logs["1"]
