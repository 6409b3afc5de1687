"""Issue 22: each loaded model lives in a runner process, so that nothing one request or one
model file does can take the node down. Each case is the hostile request or file itself,
through a real node; after each, the node answers at once and another model still works."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import NodeSpec, start_node
from tests.support.procs import ServerProcess, run_cli, wait_for
from tests.support.tiny_model import make_tiny_gguf

ENV = {"LLMLB_STALL_SECS": "4", "LLMLB_KEEP_ALIVE": "-1"}
LOOPS = (
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    "{{ messages[0].content }}"
)


NODE = NodeSpec(
    {
        "org/tiny": "tiny_gguf",
        "org/slow": "slow_gguf",
        "org/other": "tiny_gguf",
        "org/bogus": lambda d: make_tiny_gguf(
            d / "bogus.gguf", extra={"llama.rope.scaling.type": "bogus"}
        ),
        "org/loops": lambda d: make_tiny_gguf(d / "loops.gguf", chat_template=LOOPS),
    },
    env=ENV,
)


def chat(node, model: str, timeout: float = 60, **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False,
            "options": {"num_predict": 3}, **extra}  # fmt: skip
    return httpx.post(node.url + "/api/chat", json=body, timeout=timeout)


def openai_chat(node, model: str, **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
            **extra}  # fmt: skip
    return httpx.post(node.url + "/v1/chat/completions", json=body, timeout=60)


def node_is_fine(node) -> None:
    """The node answers within 2 s, and another model generates."""
    assert httpx.get(node.url + "/api/version", timeout=2).status_code == 200
    r = chat(node, "org/other")
    assert r.status_code == 200, r.text


def ps(node) -> dict:
    return httpx.get(node.url + "/api/ps", timeout=10).json()


def runner_pids(node, model: str) -> list[int]:
    return [p for m in ps(node)["models"] if m["name"] == model for p in m["pids"]]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state  # a zombie has ended; only its exit status is left


def test_a_pattern_with_a_nul_character_is_a_400_not_a_dead_node(node):
    schema = {"type": "string", "pattern": "^\x00$"}
    r = chat(node, "org/tiny", format=schema)
    assert r.status_code == 400 and "U+0000" in r.json()["error"], r.text
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    r = openai_chat(node, "org/tiny", response_format=fmt)
    assert r.status_code == 400 and "U+0000" in r.json()["error"]["message"], r.text
    node_is_fine(node)


def test_a_runaway_pattern_is_refused_by_its_estimated_cost(node):
    schema = {"type": "object", "properties": {"a": {"type": "string",
              "pattern": "^((a?){1000}){1000}$"}}}  # fmt: skip
    r = chat(node, "org/tiny", format=schema, timeout=20)
    assert r.status_code == 400, r.text
    assert "nests optional repetitions too deeply" in r.json()["error"]
    assert "at most 4096" in r.json()["error"]
    r = chat(node, "org/tiny", format={"type": "string", "pattern": "^a{1000000000}$"}, timeout=20)
    assert r.status_code == 400 and "repeats too much" in r.json()["error"], r.text
    node_is_fine(node)


def test_a_model_file_that_aborts_llama_cpp_fails_its_request_and_is_held_back(node):
    for api in (chat, openai_chat):  # crashes, on both APIs
        r = api(node, "org/bogus")
        assert r.status_code == 500, r.text
        body = r.json()
        error = body["error"]["message"] if isinstance(body["error"], dict) else body["error"]
        assert error.startswith("model 'org/bogus' failed to load (SIGABRT): "), error
        # llama.cpp's words, with the source file's name but not the path it was built in
        assert "GGML_ASSERT" in error and "/" not in error.split(": ", 1)[1].split(":")[0]
        node_is_fine(node)
    said = run_cli("node", "run", "org/bogus", "hi", env=node.client_env())  # and in the REPL
    assert said.returncode == 1
    assert said.stderr.startswith("Error: model 'org/bogus' failed to load (SIGABRT): ")
    r = chat(node, "org/bogus")  # the fourth is not even tried: held back
    assert r.status_code == 503 and "is held back" in r.json()["error"], r.text
    assert "3 times in 10 minutes" in r.json()["error"]
    assert [h["name"] for h in ps(node)["held_back"]] == ["org/bogus"]
    listed = run_cli("node", "ps", env=node.client_env())
    assert (
        listed.returncode == 0 and "Held back" in listed.stdout and "is held back" in listed.stderr
    )
    shown = run_cli("node", "show", "org/bogus", env=node.client_env())
    assert shown.returncode == 0 and "Held Back: its runner stopped unexpectedly" in shown.stdout
    stopped = run_cli("node", "stop", "org/bogus", env=node.client_env())
    assert stopped.returncode == 0, stopped.stderr
    assert ps(node)["held_back"] == []
    assert chat(node, "org/bogus").status_code == 500  # tried again after `stop`: crashes again


def test_a_template_that_loops_for_ever_is_a_400_that_names_the_limit(node):
    shown = httpx.post(node.url + "/api/show", json={"model": "org/loops"}, timeout=30)
    assert shown.status_code == 200 and "thinking" not in shown.json()["capabilities"]
    r = chat(node, "org/loops", timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == (
        "the chat template of 'org/loops' did not finish rendering within 5 s (the limit)"
    )
    node_is_fine(node)


def test_a_runner_that_crashes_mid_stream_fails_only_its_requests(node):
    assert chat(node, "org/slow").status_code == 200
    [pid] = runner_pids(node, "org/slow")
    body = {"model": "org/slow", "prompt": "go", "stream": True, "options": {"num_predict": 100000}}
    with httpx.stream("POST", node.url + "/api/generate", json=body, timeout=60) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        next(lines)  # it is generating
        os.kill(pid, signal.SIGSEGV)
        rest = list(lines)
    assert "model 'org/slow' stopped unexpectedly (SIGSEGV)" in rest[-1], rest[-3:]
    node_is_fine(node)
    assert chat(node, "org/slow").status_code == 200  # a fresh runner
    assert runner_pids(node, "org/slow") != [pid]


def test_a_runner_that_stops_answering_is_ended_after_the_stall_time(node):
    assert chat(node, "org/tiny").status_code == 200
    [pid] = runner_pids(node, "org/tiny")
    os.kill(pid, signal.SIGSTOP)  # as if stuck in native code
    try:
        r = chat(node, "org/tiny", timeout=60)
        assert r.status_code == 500, r.text
        assert "stalled" in r.json()["error"] and "LLMLB_STALL_SECS" in r.json()["error"]
        assert wait_for(lambda: gone(pid), 10)
    finally:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)
    node_is_fine(node)
    assert chat(node, "org/tiny").status_code == 200


def test_stop_ends_a_runner_that_does_not_stop_and_ps_forgets_it(node):
    assert chat(node, "org/tiny").status_code == 200
    [pid] = runner_pids(node, "org/tiny")
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        stopped = run_cli("node", "stop", "org/tiny", env=node.client_env(), timeout=30)
        assert stopped.returncode == 0, stopped.stderr
        assert "org/tiny" not in [m["name"] for m in ps(node)["models"]]
        assert time.monotonic() - started < 10
        assert wait_for(lambda: gone(pid), 5)
    finally:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)
    node_is_fine(node)


def test_kill_9_of_the_node_leaves_no_runner_behind(tmp_path, tiny_gguf):
    server = start_node(tmp_path / "home", {"org/tiny": tiny_gguf, "org/other": tiny_gguf})
    try:
        assert chat(server, "org/tiny").status_code == 200
        r = httpx.post(server.url + "/api/embed", json={"model": "org/other", "input": "x"},
                       timeout=60)  # fmt: skip
        assert r.status_code == 200
        pids = [p for m in ps(server)["models"] for p in m["pids"]]
        assert len(pids) == 2 and not any(gone(p) for p in pids)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)  # the node alone, not its process group
        server.proc.wait(30)
        assert wait_for(lambda: all(gone(p) for p in pids), 10), pids
    finally:
        server.kill()


def test_the_router_answers_a_request_that_crashed_a_model_and_sends_it_nowhere_else(
    tmp_path, tiny_gguf
):
    beat = {"LLMLB_HEARTBEAT_MS": "300"}
    bogus = make_tiny_gguf(tmp_path / "bogus.gguf", extra={"llama.rope.scaling.type": "bogus"})
    router = ServerProcess(tmp_path / "router", kind="router", env=beat).start()
    nodes = [
        start_node(
            tmp_path / f"node{i}",
            {"org/bogus": bogus, "org/tiny": tiny_gguf, "org/other": tiny_gguf},
            env=beat,
            extra_args=("--router", router.url),
        )
        for i in range(2)
    ]
    try:
        online = lambda: httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]  # noqa: E731
        assert wait_for(lambda: [n["status"] for n in online()] == ["online"] * 2)
        r = chat(router, "org/bogus")
        assert r.status_code == 500, r.text
        assert r.json()["error"].startswith("model 'org/bogus' failed to load (SIGABRT)")
        crashed = ["stopped unexpectedly" in n.log() for n in nodes]
        assert sorted(crashed) == [False, True]  # one node only: the request was not spread
        for n in nodes:
            node_is_fine(n)
        assert chat(router, "org/tiny").status_code == 200
    finally:
        for n in nodes:
            n.stop()
        router.stop()
