"""list, show and rm as a user runs them, against a real `llmlb node serve`."""

import os
import time

import httpx
import pytest

from tests.e2e.conftest import start_node
from tests.support.catalog import register_file
from tests.support.fake_ollama import add_model, snapshot
from tests.support.procs import LLMLB, ServerProcess, run_cli
from tests.support.terminal import Terminal
from tests.support.tiny_safetensors import make_tiny_safetensors


@pytest.fixture
def node(tmp_path, llmlb_env, tiny_gguf):
    register_file(llmlb_env, "meta-llama/Llama-3.2-3B-Instruct", tiny_gguf)
    st, _ = make_tiny_safetensors(tmp_path / "st-src", shards=2)
    target = llmlb_env / "models" / "Qwen" / "Tiny-ST"
    target.parent.mkdir(parents=True, exist_ok=True)
    st.rename(target)
    from llmlb.store import catalog, db

    engine = db.open_node_catalog(llmlb_env / "llmlb.db")
    catalog.register_model(
        engine, name="Qwen/Tiny-ST", path=target, format="Safetensors", source="HuggingFace"
    )
    engine.dispose()
    manifest = add_model(llmlb_env.parent / "ollama-models", "llama3.2", tiny_gguf.read_bytes())
    three_days_ago = time.time() - 3 * 86400 - 60
    os.utime(manifest, (three_days_ago, three_days_ago))
    with ServerProcess(llmlb_env) as server:
        yield server


def cli(server, *args):
    return run_cli(*args, env=server.client_env())


def test_list(node):
    r = cli(node, "node", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "MODIFIED", "ALIAS"]
    assert lines[1].startswith("Qwen/Tiny-ST ")  # newest first
    assert lines[2].startswith("meta-llama/Llama-3.2-3B-Instruct ")
    assert "470 KB" in lines[2] and "Less than a minute ago" in lines[2]
    assert lines[2].endswith("   llama-3.2-3b-instruct")
    assert lines[3].startswith("ollama:llama3.2 (readonly)") and lines[3].endswith("3 days ago")


def test_show_block_and_items(node):
    r = cli(node, "node", "show", "llama-3.2-3b-instruct")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:9] == [
        "Model: meta-llama/Llama-3.2-3B-Instruct",
        "  Alias: llama-3.2-3b-instruct",
        "  Architecture: llama",
        "  Parameters: 115.52K",
        "  Quantization: F32",
        "  Context Length: 2048",
        "  Format: GGUF",
        "  Size: 470 KB",
        "  License: MIT",
    ]
    assert cli(node, "node", "show", "Qwen/Tiny-ST").stdout.count("Format: Safetensors") == 1
    assert cli(node, "node", "show", "llama-3.2-3b-instruct", "--license").stdout == "MIT\n"
    assert "im_start" in cli(node, "node", "show", "llama-3.2-3b-instruct", "--template").stdout
    assert cli(node, "node", "show", "llama-3.2-3b-instruct", "--system").stdout == (
        "No system prompt was specified for this model.\n"
    )
    assert cli(node, "node", "show", "llama-3.2-3b-instruct", "--modelfile").stdout.startswith(
        "# Modelfile"
    )
    both = cli(node, "node", "show", "llama-3.2-3b-instruct", "--license", "--system")
    assert both.returncode == 1 and "at most one" in both.stderr


def test_show_ollama_model(node):
    r = cli(node, "node", "show", "ollama:llama3.2")
    assert r.returncode == 0 and "Architecture: llama" in r.stdout


@pytest.mark.parametrize(
    "name, message",
    [
        ("nope", "Error: model 'nope' not found"),
        ("../../etc/passwd", "Error: invalid model name"),
        ("bad name!", "Error: invalid model name"),
    ],
)
def test_errors(node, name, message):
    for cmd in ("show", "rm"):
        r = cli(node, "node", cmd, name)
        assert r.returncode == 1
        assert r.stderr.startswith(message) and r.stderr.count("\n") == 1


def test_rm_deletes_files_and_row(node, llmlb_env):
    model_dir = llmlb_env / "models" / "meta-llama" / "Llama-3.2-3B-Instruct"
    assert model_dir.exists()
    r = cli(node, "node", "rm", "llama-3.2-3b-instruct")
    assert r.returncode == 0 and r.stdout == "deleted 'llama-3.2-3b-instruct'\n"
    assert not model_dir.exists()
    assert "Llama-3.2-3B" not in cli(node, "node", "list").stdout
    assert cli(node, "node", "show", "meta-llama/Llama-3.2-3B-Instruct").returncode == 1


def test_rm_ollama_is_refused_and_untouched(node, llmlb_env):
    root = llmlb_env.parent / "ollama-models"
    before = snapshot(root)
    r = cli(node, "node", "rm", "ollama:llama3.2")
    assert r.returncode == 1
    assert r.stderr == "Error: 'ollama:llama3.2' is read-only (owned by ollama)\n"
    assert snapshot(root) == before


def test_api_shapes(node):
    tags = httpx.get(node.url + "/api/tags").json()["models"]
    m = next(t for t in tags if t["name"] == "meta-llama/Llama-3.2-3B-Instruct:latest")
    assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(m)
    assert m["details"]["format"] == "gguf" and m["details"]["quantization_level"] == "F32"
    show = httpx.post(node.url + "/api/show", json={"model": "llama-3.2-3b-instruct"}).json()
    assert {
        "license",
        "modelfile",
        "parameters",
        "template",
        "system",
        "details",
        "model_info",
        "capabilities",
    } <= set(show)
    assert show["model_info"]["llama.context_length"] == 2048
    assert httpx.post(node.url + "/api/show", json={"model": "x"}).json() == {
        "error": "model 'x' not found"
    }
    assert httpx.post(node.url + "/api/show", content=b"{nope").status_code == 400
    assert httpx.post(node.url + "/api/show", json={"model": 5}).status_code == 400
    assert httpx.request("DELETE", node.url + "/api/delete", json={"model": "x"}).status_code == 404


def test_rm_of_a_generating_model_leaves_ps_empty(tmp_path, slow_gguf):
    """One terminal chats, another removes the model: the chat ends with an error, and ps
    (the same moment rm returns) lists nothing."""
    server = start_node(tmp_path / "home", {"org/slow": slow_gguf})
    try:
        with Terminal() as term:
            chat = term.run([*LLMLB, "node", "run", "org/slow", "hi"], env=server.client_env())
            try:
                assert term.wait_for(lambda t: len(t.text()) > 0, 120)  # it is writing a reply
                assert "org/slow" in cli(server, "node", "ps").stdout
                removed = cli(server, "node", "rm", "org/slow")
                running = cli(server, "node", "ps")
                _, err = chat.communicate(timeout=60)
            finally:
                chat.kill()
        assert removed.returncode == 0, removed.stderr
        assert running.returncode == 0 and running.stdout.splitlines()[1:] == [], running.stdout
        assert chat.returncode == 1 and b"was unloaded" in err
        assert "org/slow" not in cli(server, "node", "list").stdout
    finally:
        server.stop()
