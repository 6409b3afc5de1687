"""`llmlb node create` / `cp`, /api/create, /api/copy and /api/blobs against a real node: from
a GGUF, a model the node has, a Safetensors checkpoint (converted, quantized), with a LoRA
adapter, SYSTEM, PARAMETER, MESSAGE; and every bad input refused with nothing left behind."""

from __future__ import annotations

import hashlib
import json

import httpx
import ollama
import psutil
import pytest

from tests.support.catalog import register_file
from tests.support.hf_checkpoint import smollm2_checkpoint
from tests.support.procs import ServerProcess, run_cli, wait_for
from tests.support.tiny_lora import make_tiny_lora
from tests.support.tiny_model import TinySpec


@pytest.fixture(scope="module")
def node(tmp_path_factory, tiny_gguf_module, smollm2):
    home = tmp_path_factory.mktemp("create") / "home"
    register_file(home, "tiny", tiny_gguf_module)
    register_file(home, "smollm2", smollm2)
    with ServerProcess(home) as server:
        yield server


@pytest.fixture(scope="module")
def smol_checkpoint(tmp_path_factory, smollm2):
    """SmolLM2-135M-Instruct as Hugging Face publishes it (F16 Safetensors, tokenizer.json,
    template), rebuilt from its Q4_1 GGUF."""
    return smollm2_checkpoint(smollm2, tmp_path_factory.mktemp("smol") / "SmolLM2-135M-Instruct")


@pytest.fixture(scope="module")
def smol_st(node, smol_checkpoint, tmp_path_factory):
    """The checkpoint created as a model: (CLI result, model name)."""
    mf = tmp_path_factory.mktemp("mf") / "Modelfile"
    mf.write_text(f"FROM {smol_checkpoint}\n")
    return cli(node, "node", "create", "smol-st", "-f", str(mf)), "smol-st"


@pytest.fixture(scope="module")
def tiny_gguf_module(tmp_path_factory):
    from tests.support.tiny_model import make_tiny_gguf

    return make_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


def cli(node, *args):
    return run_cli(*args, env=node.client_env(), timeout=600)


def modelfile(tmp_path, text: str, name: str = "Modelfile"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def generate(node, model: str, prompt: str, n: int = 16, **options) -> str:
    return "".join(tokens(node, model, prompt, n, **options))


def tokens(node, model: str, prompt: str, n: int = 16, **options) -> list[str]:
    """The greedy tokens of a raw prompt."""
    r = httpx.post(
        node.url + "/api/generate",
        json={
            "model": model,
            "prompt": prompt,
            "raw": True,
            "stream": False,
            "logprobs": True,
            "options": {"temperature": 0, "num_predict": n, **options},
        },
        timeout=300,
    )
    assert r.status_code == 200, r.text
    return [t["token"] for t in r.json()["logprobs"]]


def names(node) -> set[str]:
    return {
        m["name"].removesuffix(":latest")
        for m in httpx.get(node.url + "/api/tags").json()["models"]
    }


def leftovers(node) -> list[str]:
    """What a failed create could leave half-made: staging files, partial uploads. (Whole,
    verified uploads stay for the next create, as in ollama.)"""
    staged = [str(p) for p in (node.home / "creating").rglob("*") if p.is_file()]
    return staged + [str(p) for p in (node.home / "blobs").glob(".upload-*")]


def test_create_from_a_gguf_then_cp_shares_the_file_and_rm_of_the_copy_keeps_the_original(
    node, tmp_path, tiny_gguf_module
):
    r = cli(node, "node", "create", "made", "-f", modelfile(tmp_path, f"FROM {tiny_gguf_module}\n"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "success"
    r = cli(node, "node", "cp", "made", "made-copy")
    assert r.returncode == 0 and r.stdout == "copied 'made' to 'made-copy'\n", r.stderr
    original, copy = (node.home / "models" / n / "tiny.gguf" for n in ("made", "made-copy"))
    assert original.stat().st_ino == copy.stat().st_ino  # one file, two names: no bytes copied
    before = generate(node, "made-copy", "Hello")
    r = cli(node, "node", "rm", "made-copy")
    assert r.returncode == 0, r.stderr
    assert "made-copy" not in names(node) and not copy.exists()
    assert generate(node, "made", "Hello") == before
    show = httpx.post(node.url + "/api/show", json={"model": "made"}).json()
    assert show["source"] == "Local" and show["details"]["format"] == "gguf"
    assert leftovers(node) == []


def test_a_lora_adapter_is_applied_and_a_null_one_changes_nothing(node, tmp_path, tiny_gguf_module):
    lora = make_tiny_lora(tmp_path / "lora.gguf")
    null = make_tiny_lora(tmp_path / "null.gguf", zero=True)
    for name, adapter in (("with-lora", lora), ("with-null-lora", null)):
        text = f"FROM {tiny_gguf_module}\nADAPTER {adapter}\n"
        r = cli(node, "node", "create", name, "-f", modelfile(tmp_path, text, name))
        assert r.returncode == 0, r.stderr
    base = generate(node, "tiny", "The quick brown fox")
    assert generate(node, "with-null-lora", "The quick brown fox") == base
    assert generate(node, "with-lora", "The quick brown fox") != base
    shown = cli(node, "node", "show", "with-lora").stdout
    assert "Adapters: adapter-0-lora.gguf" in shown


def test_a_lora_for_another_model_is_refused_and_nothing_is_kept(node, tmp_path, tiny_gguf_module):
    other = make_tiny_lora(tmp_path / "other.gguf", TinySpec(n_embd=32, n_head=4, n_head_kv=4))
    text = f"FROM {tiny_gguf_module}\nADAPTER {other}\n"
    r = cli(node, "node", "create", "wrong-lora", "-f", modelfile(tmp_path, text))
    assert r.returncode == 1
    assert r.stderr.startswith("Error: adapter 'other.gguf' does not fit this model")
    assert "wrong-lora" not in names(node) and not (node.home / "models" / "wrong-lora").exists()
    assert leftovers(node) == []


def test_the_ollama_client_creates_and_copies(node, tiny_gguf_module):
    client = ollama.Client(host=node.url, timeout=300)
    digest = client.create_blob(tiny_gguf_module)
    assert digest == "sha256:" + hashlib.sha256(tiny_gguf_module.read_bytes()).hexdigest()
    done = client.create(
        model="via-ollama",
        files={"tiny.gguf": digest},
        system="You are terse.",
        parameters={"temperature": 0.1, "stop": ["###"]},
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    )
    assert done.status == "success"
    assert client.copy("via-ollama", "via-ollama-2").status == "success"
    shown = client.show("via-ollama-2")
    assert (
        'SYSTEM """You are terse."""' in shown.modelfile and "temperature 0.1" in shown.parameters
    )
    listed = {(m.model or "").removesuffix(":latest") for m in client.list().models}
    assert {"via-ollama", "via-ollama-2"} <= listed
    reply = client.chat(
        model="via-ollama-2",
        messages=[{"role": "user", "content": "x"}],
        options={"num_predict": 4},
    )
    assert reply.message.role == "assistant"


def test_show_modelfile_creates_the_same_model_again_without_uploading(
    node, tmp_path, tiny_gguf_module
):
    go = (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ range .Messages }}"
        "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
    )
    text = (
        f'FROM {tiny_gguf_module}\nTEMPLATE """{go}"""\nSYSTEM Answer in French.\n'
        "PARAMETER temperature 0.3\nPARAMETER stop <|im_end|>\nMESSAGE user Bonjour\n"
        "MESSAGE assistant Salut\n"
    )
    r = cli(node, "node", "create", "first", "-f", modelfile(tmp_path, text))
    assert r.returncode == 0, r.stderr
    shown = cli(node, "node", "show", "first", "--modelfile").stdout
    r = cli(node, "node", "create", "second", "-f", modelfile(tmp_path, shown, "Again"))
    assert r.returncode == 0, r.stderr
    assert "copying file" not in r.stdout  # the node had the file: found by its digest
    a, b = (
        httpx.post(node.url + "/api/show", json={"model": m}).json() for m in ("first", "second")
    )
    for key in ("template", "system", "parameters", "license"):
        assert a[key] == b[key], key
    assert a["template"] == go and a["system"] == "Answer in French."
    rows = {m["model"]: m for m in httpx.get(node.url + "/api/tags").json()["models"]}
    rows = {k.removesuffix(":latest"): v for k, v in rows.items()}
    assert rows["first"]["digest"] == rows["second"]["digest"]
    again = cli(node, "node", "show", "second", "--modelfile").stdout
    assert again.replace("/models/second/", "/models/first/") == shown


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("FROM {tiny}\nFORM x\n", "Error: Modelfile line 2: unknown instruction 'FORM'"),
        (
            "FROM ./missing.gguf\n",
            "Error: Modelfile line 1: FROM ./missing.gguf: no such file or directory",
        ),
        (
            "FROM {tiny}\nADAPTER ./nope.gguf\n",
            "Error: Modelfile line 2: ADAPTER ./nope.gguf: no such",
        ),
        ("FROM no-such-model\n", "Error: model 'no-such-model' not found"),
        (
            "FROM {tiny}\nTEMPLATE {{{{ range .Tools }}}}x{{{{ end }}}}\n",
            "Error: the TEMPLATE uses '.Tools'",
        ),
        (
            "FROM {tiny}\nPARAMETER mirostat 2\n",
            "Error: Modelfile line 2: unknown parameter 'mirostat'",
        ),
    ],
)
def test_bad_modelfiles_exit_1_and_leave_nothing(node, tmp_path, tiny_gguf_module, text, error):
    r = cli(
        node, "node", "create", "bad", "-f", modelfile(tmp_path, text.format(tiny=tiny_gguf_module))
    )
    assert r.returncode == 1 and r.stderr.startswith(error), r.stderr
    assert "bad" not in names(node) and not (node.home / "models" / "bad").exists()
    assert leftovers(node) == []


def test_a_safetensors_directory_without_config_json_is_refused(node, tmp_path):
    from tests.support import tiny_hf

    d = tiny_hf.make_checkpoint(tmp_path / "ckpt", "qwen2")
    (d / "config.json").unlink()
    r = cli(node, "node", "create", "no-config", "-f", modelfile(tmp_path, f"FROM {d}\n"))
    assert r.returncode == 1
    assert r.stderr == "Error: a Safetensors model needs its config.json; none was given\n"
    assert "no-config" not in names(node)
    # its files were uploaded, but a create that failed before they were used keeps them;
    # an uncovered architecture is refused before anything is converted
    cfg = dict(tiny_hf.config("qwen2"), architectures=["MambaForCausalLM"])
    (d / "config.json").write_text(json.dumps(cfg))
    r = cli(node, "node", "create", "mamba", "-f", modelfile(tmp_path, f"FROM {d}\n"))
    assert r.returncode == 1
    assert r.stderr.startswith("Error: architecture 'MambaForCausalLM' cannot be converted to GGUF")
    assert "covered: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM" in r.stderr


def test_an_upload_whose_digest_does_not_match_is_refused_and_not_kept(node):
    wrong = "sha256:" + "0" * 64
    r = httpx.post(node.url + f"/api/blobs/{wrong}", content=b"some bytes")
    assert r.status_code == 400
    assert r.json()["error"].startswith("the uploaded data's digest is sha256:")
    assert httpx.head(node.url + f"/api/blobs/{wrong}").status_code == 404
    assert httpx.post(node.url + "/api/blobs/sha256:xyz", content=b"x").status_code == 400
    good = b"payload"
    digest = "sha256:" + hashlib.sha256(good).hexdigest()
    assert httpx.post(node.url + f"/api/blobs/{digest}", content=good).status_code == 201
    assert httpx.head(node.url + f"/api/blobs/{digest}").status_code == 200
    (node.home / "blobs" / digest.replace(":", "-")).unlink()  # leave the node clean


def test_a_conversion_killed_half_way_leaves_nothing_and_can_run_again(node, smol_checkpoint):
    d = smol_checkpoint  # 270 MB: a conversion that takes long enough to be caught
    client = ollama.Client(host=node.url, timeout=300)
    files = {p.name: client.create_blob(p) for p in sorted(d.iterdir())}
    server = psutil.Process(node.proc.pid)
    found: list[psutil.Process] = []

    def converter() -> bool:
        kids = server.children(recursive=True)
        found.extend(c for c in kids if "llmlb.convert" in c.cmdline())
        return bool(found)

    with httpx.stream(
        "POST", node.url + "/api/create", json={"model": "killed", "files": files}, timeout=300
    ) as r:
        lines = r.iter_lines()
        assert json.loads(next(lines)) == {"status": "converting model"}
        assert wait_for(converter, timeout=60)
        found[0].kill()
        rest = [json.loads(line) for line in lines]
    assert rest[-1]["error"].startswith("the conversion was stopped (SIGKILL); nothing was created")
    assert "killed" not in names(node) and not (node.home / "models" / "killed").exists()
    assert list((node.home / "creating").iterdir()) == []
    done = client.create(model="killed", files=files)  # the blobs are still there: run it again
    assert done.status == "success" and "killed" in names(node)
    assert leftovers(node) == []


PROMPTS = (
    "The capital of France is",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):",
    "<|im_start|>user\nWhat is the largest planet?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time",
)


def test_a_safetensors_checkpoint_converts_to_its_ggufs_weights_and_answers(
    node, smol_st, smol_checkpoint, smollm2
):
    """SmolLM2's GGUF (Q4_1) -> Safetensors (F16) -> create: every weight is the F16 of the
    original's, and greedy decoding follows the original Q4_1 model (their arithmetic differs:
    llama.cpp multiplies Q4_1 weights by 8-bit-quantized activations, F16 weights by F16
    ones, so the logits differ slightly and a long reply may part at a near tie)."""
    import gguf
    import numpy as np

    r, name = smol_st
    assert r.returncode == 0, r.stderr
    assert "converting model" in r.stdout and r.stdout.splitlines()[-1] == "success"
    converted = gguf.GGUFReader(node.home / "models" / name / "model-F16.gguf")
    original = {t.name: t for t in gguf.GGUFReader(smollm2).tensors}
    assert sorted(t.name for t in converted.tensors) == sorted(original)
    for t in converted.tensors:
        o = original[t.name]
        want = gguf.quants.dequantize(o.data, o.tensor_type).astype(np.float16)
        assert np.array_equal(np.asarray(t.data).reshape(want.shape), want.astype(t.data.dtype)), (
            t.name
        )
    agree = []
    for prompt in PROMPTS:
        a, b = tokens(node, "smollm2", prompt, 12), tokens(node, name, prompt, 12)
        assert a[0] == b[0], prompt
        agree.append(a[:8] == b[:8])
    assert sum(agree) >= 3  # most prompts: the first 8 tokens
    show = httpx.post(node.url + "/api/show", json={"model": name}).json()
    assert show["converted_from"]["format"] == "Safetensors"
    size = (smol_checkpoint / "model.safetensors").stat().st_size
    assert show["converted_from"]["peak_rss"] < size / 2  # streamed: well below the checkpoint
    assert (
        "Format: GGUF (converted from Safetensors, float16)"
        in cli(node, "node", "show", name).stdout
    )


def test_create_quantize_q8_0(node, smol_st, smol_checkpoint, tmp_path):
    r = cli(
        node,
        "node",
        "create",
        "smol-q8",
        "-q",
        "Q8_0",
        "-f",
        modelfile(tmp_path, f"FROM {smol_checkpoint}\n"),
    )
    assert r.returncode == 0, r.stderr
    assert "quantizing F16 model to Q8_0" in r.stdout
    show = httpx.post(node.url + "/api/show", json={"model": "smol-q8"}).json()
    assert show["details"]["quantization_level"] == "Q8_0"
    f16, q8 = (
        node.home / "models" / n for n in ("smol-st/model-F16.gguf", "smol-q8/model-Q8_0.gguf")
    )
    assert q8.stat().st_size < 0.6 * f16.stat().st_size
    assert tokens(node, "smol-q8", PROMPTS[0], 4)[:2] == tokens(node, "smol-st", PROMPTS[0], 4)[:2]
    r = cli(
        node,
        "node",
        "create",
        "q8-again",
        "-q",
        "Q4_K_M",
        "-f",
        modelfile(tmp_path, "FROM smol-q8\n", "M2"),
    )
    assert r.returncode == 1 and "cannot quantize a model that is already Q8_0" in r.stderr


def test_a_modelfile_system_prompt_and_temperature_shape_the_answer(node, tmp_path):
    text = (
        "FROM smollm2\nSYSTEM You are a pirate. Answer every question like a pirate, with arr.\n"
        "PARAMETER temperature 0\nPARAMETER num_predict 24\n"
    )
    r = cli(node, "node", "create", "pirate", "-f", modelfile(tmp_path, text))
    assert r.returncode == 0, r.stderr
    base, pirate = (node.home / "models" / n for n in ("smollm2", "pirate"))
    assert next(base.iterdir()).stat().st_ino == next(pirate.iterdir()).stat().st_ino
    question = "What is the capital of France?"
    first = cli(node, "node", "run", "pirate", question)  # the REPL's defaults do not override
    again = cli(node, "node", "run", "pirate", question)
    assert first.returncode == 0 and first.stdout.strip()
    assert first.stdout == again.stdout  # temperature 0 from the Modelfile, not the request
    plain = httpx.post(
        node.url + "/api/chat",
        json={
            "model": "smollm2",
            "messages": [{"role": "user", "content": question}],
            "stream": False,
            "options": {"temperature": 0, "num_predict": 24},
        },
        timeout=300,
    ).json()["message"]["content"]
    assert plain.strip() != first.stdout.strip()  # the SYSTEM prompt is in the prompt


def test_the_router_sees_created_and_copied_models_through_the_heartbeat(
    tmp_path, tiny_gguf_module
):
    from tests.e2e.conftest import start_node

    beat = {"LLMLB_HEARTBEAT_MS": "300", "LLMLB_THREADS": "1"}
    router = ServerProcess(tmp_path / "router", kind="router", env=beat).start()
    node = start_node(tmp_path / "node", {}, env=beat, extra_args=("--router", router.url))
    try:

        def routed() -> set[str]:
            models = httpx.get(router.url + "/admin/cluster/models").json()["models"]
            return {m["model"] for m in models}

        client = ollama.Client(host=node.url, timeout=300)
        client.create(
            model="org/made-here", files={"tiny.gguf": client.create_blob(tiny_gguf_module)}
        )
        client.copy("org/made-here", "org/copied-here")
        assert wait_for(lambda: {"org/made-here", "org/copied-here"} <= routed(), timeout=60), (
            routed()
        )
        reply = httpx.post(
            router.url + "/api/generate",
            json={"model": "org/copied-here", "prompt": "hi", "raw": True, "stream": False,
                  "options": {"num_predict": 2}},
            timeout=120,
        )  # fmt: skip
        assert reply.status_code == 200, reply.text
    finally:
        node.stop()
        router.stop()


def test_a_node_killed_mid_conversion_leaves_nothing_once_it_starts_again(
    tmp_path, smol_checkpoint
):
    import os
    import signal

    node = ServerProcess(tmp_path / "home").start()
    try:
        client = ollama.Client(host=node.url, timeout=300)
        files = {p.name: client.create_blob(p) for p in sorted(smol_checkpoint.iterdir())}
        server = psutil.Process(node.proc.pid)
        with httpx.stream(
            "POST", node.url + "/api/create", json={"model": "crashed", "files": files}, timeout=300
        ) as r:
            # (the line iterator is kept: dropping it would close the stream, and a client
            # that leaves cancels its create)
            progress = r.iter_lines()
            assert json.loads(next(progress)) == {"status": "converting model"}
            found: list[psutil.Process] = []

            def converter() -> bool:
                for c in server.children(recursive=True):
                    try:  # (a child may end between the listing and the reading)
                        if "llmlb.convert" in c.cmdline():
                            found.append(c)
                    except (psutil.Error, OSError):
                        continue
                return bool(found)

            assert wait_for(converter, timeout=60)
            child = found[0]
            os.kill(node.proc.pid, signal.SIGKILL)  # the node alone, as a crash would
            node.proc.wait(30)
        child.wait(30)  # the converter ends with its parent: it would write on for nothing
        node.start()
        assert "crashed" not in names(node)
        assert not (node.home / "models" / "crashed").exists()
        assert not (node.home / "creating").exists()  # the staging went at start-up
        assert client.create(model="crashed", files=files).status == "success"
    finally:
        node.kill()
