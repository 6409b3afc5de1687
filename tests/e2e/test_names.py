"""Model names as ollama users type them, against a real node server: `:latest`, `:TAG`,
aliases, typos, and a model that is still downloading."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.e2e.conftest import NodeSpec
from tests.support.hub_server import HubServer
from tests.support.procs import LLMLB, ServerProcess, run_cli, wait_for
from tests.support.tiny_model import TinySpec, make_tiny_gguf

pytestmark = pytest.mark.e2e
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"


# A 128-token context bounds every reply of `run` (which has no token limit of its own).
def _short(d):
    return make_tiny_gguf(d / "short.gguf", context_length=128)


NODE = NodeSpec({SMOL: _short, "org/repo": _short, "org/repo/Q4_1": _short})


def cli(node, *args, **kw):
    return run_cli(*args, env=node.client_env(), **kw)


def shown_name(node, typed: str) -> str:
    r = cli(node, "node", "show", typed)
    assert r.returncode == 0, (typed, r.stderr)
    return r.stdout.splitlines()[0].removeprefix("Model: ")


@pytest.mark.parametrize(
    "typed, name",
    [
        ("smollm2-135m-instruct:latest", SMOL),
        (f"{SMOL}:latest", SMOL),
        ("smollm2-135m-instruct", SMOL),
        ("org/repo:Q4_1", "org/repo/Q4_1"),  # what `pull org/repo:Q4_1` registers
        ("org/repo:q4_1", "org/repo/Q4_1"),
        ("repo:Q4_1", "org/repo/Q4_1"),  # the alias of org/repo, with a tag
        ("org/repo:F32", "org/repo"),  # the repo's own file is that quantization
        ("repo-q4_1:latest", "org/repo/Q4_1"),
        ("hf.co/org/repo:Q4_1", "org/repo/Q4_1"),  # as ollama users write a pulled model
    ],
)
def test_latest_and_tags_resolve_to_what_pull_made(node, typed, name):
    assert shown_name(node, typed) == name


def test_run_stop_and_rm_take_tags(node):
    r = cli(node, "node", "run", "smollm2-135m-instruct:latest", "Say hi")
    assert r.returncode == 0, r.stderr
    r = cli(node, "node", "run", "org/repo:Q4_1", "Say hi")
    assert r.returncode == 0, r.stderr
    assert cli(node, "node", "stop", "org/repo:Q4_1").returncode == 0
    r = cli(node, "node", "rm", "org/repo:q4_1")
    assert r.returncode == 0, r.stderr
    listed = cli(node, "node", "list").stdout
    assert "org/repo/Q4_1" not in listed and "org/repo " in listed


def test_ollama_clients_may_send_latest(node):
    import ollama

    reply = ollama.Client(host=node.url).chat(
        model="smollm2-135m-instruct:latest",
        messages=[{"role": "user", "content": "hi"}],
        options={"num_predict": 4},
    )
    assert reply.message.role == "assistant"


def test_a_typo_suggests_the_closest_local_names_and_no_impossible_pull(node):
    r = cli(node, "node", "run", "smolm2-135m-instruct")
    assert r.returncode == 1
    assert r.stderr == (
        "Error: model 'smolm2-135m-instruct' not found; did you mean smollm2-135m-instruct?\n"
    )
    r = cli(node, "node", "show", "smollm2-135m-instuct:latest")
    assert "did you mean smollm2-135m-instruct?" in r.stderr


def test_a_pull_is_suggested_only_for_names_that_can_be_pulled(node):
    r = cli(node, "node", "run", "acme/nope")
    assert r.stderr == (
        "Error: model 'acme/nope' not found; download it with `llmlb node pull acme/nope`\n"
    )
    r = cli(node, "node", "run", "nothing-like-it")
    assert r.stderr == "Error: model 'nothing-like-it' not found\n"


def test_list_shows_the_alias_after_the_contract_columns(node):
    lines = cli(node, "node", "list").stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "MODIFIED", "ALIAS"]
    smol = next(line for line in lines if line.startswith(SMOL + " "))
    assert smol.split()[-1] == "smollm2-135m-instruct"


def test_a_model_still_downloading_is_reported_as_downloading(tmp_path, llmlb_env):
    spec = TinySpec(n_embd=256, n_layer=4, n_ff=2048, seed=3)
    big = make_tiny_gguf(tmp_path / "src" / "big-F32.gguf", spec)
    with HubServer(tmp_path / "hub") as hub:
        hub.add_repo("acme/big-GGUF", {"big-F32.gguf": big})
        hub.fault("big-F32.gguf", rate=1 << 20)
        with ServerProcess(llmlb_env, env={"HF_ENDPOINT": hub.url}) as server:
            puller = subprocess.Popen(
                [*LLMLB, "node", "pull", "acme/big-GGUF"],
                env=server.client_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:

                def progress():
                    tags = httpx.get(server.url + "/api/tags").json()["models"]
                    m = next((t for t in tags if t["name"] == "acme/big-GGUF:latest"), None)
                    return m and m.get("downloading", {}).get("completed")

                assert wait_for(progress)
                for typed in ("acme/big-GGUF", "big", "acme/big-GGUF:latest"):
                    r = cli(server, "node", "run", typed, "hi")
                    assert r.returncode == 1
                    assert r.stderr.startswith(f"Error: model '{typed}' is still downloading (")
                    assert "%)" in r.stderr
                chat = httpx.post(
                    server.url + "/api/chat",
                    json={"model": "acme/big-GGUF", "messages": [], "stream": False},
                )
                assert chat.status_code == 409 and "still downloading" in chat.json()["error"]
                assert cli(server, "node", "rm", "big").returncode == 0  # cancels it
                assert "acme/big-GGUF" not in cli(server, "node", "list").stdout
            finally:
                puller.wait(60)
