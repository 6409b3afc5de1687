"""Details users read (issue 16): durations that nest, one log format for every line, and
/metrics counting what each request really answered."""

from __future__ import annotations

import re

import httpx

from tests.e2e.conftest import start_node
from tests.support.procs import ServerProcess

LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO |WARNI|ERROR|CRITI)\S* [\w.]+: ")


def test_durations_nest_and_every_log_line_has_one_format(tmp_path, tiny_gguf):
    node = start_node(tmp_path / "home", {"org/tiny": tiny_gguf})
    try:
        body = {
            "model": "org/tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": False,
            "options": {"num_predict": 3},
        }
        first = httpx.post(node.url + "/api/chat", json=body, timeout=60).json()  # loads the model
        assert first["load_duration"] > 0
        assert first["total_duration"] >= first["load_duration"]
        assert first["total_duration"] >= first["prompt_eval_duration"] + first["eval_duration"]
        streamed = httpx.post(
            node.url + "/api/generate", json={**body, "prompt": "x", "stream": True}, timeout=60
        )
        final = [
            line for line in streamed.text.splitlines() if '"done":true' in line.replace(" ", "")
        ][-1]
        assert '"total_duration"' in final
        # errors are counted with their status, not only successes
        assert (
            httpx.post(node.url + "/api/chat", json={**body, "model": "ghost"}).status_code == 404
        )
        metrics = httpx.get(node.url + "/metrics").text
        assert 'llmlb_requests_total{endpoint="/api/chat",status="404"} 1.0' in metrics
        assert 'llmlb_requests_total{endpoint="/api/chat",status="200"} 1.0' in metrics
        assert "# HELP llmlb_time_to_first_token_seconds" in metrics
    finally:
        assert node.stop() == 0
    lines = [line for line in node.log().splitlines() if line.strip()]
    assert lines and all(LINE.match(line) for line in lines), "\n".join(
        line for line in lines if not LINE.match(line)
    )


def test_the_routers_log_has_the_same_format(tmp_path):
    router = ServerProcess(tmp_path / "router", kind="router").start()
    assert httpx.get(router.url + "/api/version").status_code == 200
    assert router.stop() == 0
    lines = [line for line in router.log().splitlines() if line.strip()]
    assert any("LLMLB_NODE_TOKEN is not set" in line for line in lines)
    assert lines and all(LINE.match(line) for line in lines), "\n".join(
        line for line in lines if not LINE.match(line)
    )
