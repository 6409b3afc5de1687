"""The prompt cache's disk tier through real nodes: a conversation whose cells were lost (the
node restarted, another request took its sequence) is restored from disk and answers with the
same greedy tokens as when it was evaluated; a damaged file, a file of another model and cells
that do not fit the model each fall back to a cold prompt with one warning.

Answers are compared on SmolLM2 (real text); the fallbacks are plumbing, on the tiny model.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import msgspec
import openai

from llmlb.engine import prompt_cache
from llmlb.store import catalog, db
from tests.e2e.conftest import start_node
from tests.support.catalog import register_file
from tests.support.procs import ServerProcess
from tests.support.tiny_model import TinySpec, make_tiny_gguf

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
FACTS = " ".join(
    f"Fact {i}: the lighthouse of harbour {i} is painted {['white', 'red', 'green'][i % 3]}."
    for i in range(40)
)  # about 600 tokens
CONVERSATION = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": FACTS + "\nWhat colour is the lighthouse of harbour 7?"},
]
OTHER = [
    {"role": "system", "content": "You are a poet."},
    {"role": "user", "content": "Write a line about the sea."},
]
REMOVED = re.compile(r"WARNING llmlb\.engine: prompt cache: removed (\S+): (.*)")


def chat(node, messages, **kw):
    client = openai.OpenAI(base_url=node.url + "/v1", api_key="x", max_retries=0, timeout=600)
    r = client.chat.completions.create(
        model=SMOL, messages=messages, temperature=0, max_tokens=16, logprobs=True, **kw
    )
    tokens = [t.token for t in r.choices[0].logprobs.content]
    return tokens, r.usage.prompt_tokens, r.usage.prompt_tokens_details.cached_tokens


def restored(node) -> float:
    for line in httpx.get(node.url + "/metrics").text.splitlines():
        if line.startswith('llmlb_prompt_cache_tokens_total{source="restored"}'):
            return float(line.split()[1])
    return 0.0


def saved_files(home: Path) -> list[Path]:
    return sorted((home / prompt_cache.DIR_NAME).glob("*/*.kv"))


def test_after_a_restart_the_conversation_is_restored_with_the_same_greedy_tokens(
    tmp_path, smollm2
):
    home = tmp_path / "home"
    node = start_node(home, {SMOL: smollm2})
    cold, prompt_tokens, cached = chat(node, CONVERSATION)
    assert cached == 0
    assert node.stop() == 0, node.log()  # the runner saves its sequences on the way out
    assert saved_files(home), node.log()

    node = ServerProcess(home).start()
    try:
        warm, again, cached = chat(node, CONVERSATION)
        assert warm == cold
        assert again == prompt_tokens and cached == prompt_tokens - 1  # all but the last
        assert restored(node) == cached
    finally:
        node.stop()


def test_a_sequence_taken_by_other_traffic_is_restored_when_its_conversation_returns(
    tmp_path, smollm2
):
    node = start_node(tmp_path / "home", {SMOL: smollm2}, env={"LLMLB_NUM_PARALLEL": "1"})
    try:
        first, _, _ = chat(node, CONVERSATION)
        chat(node, OTHER)  # takes the only sequence: the conversation's cells go to disk
        back, prompt_tokens, cached = chat(node, CONVERSATION)
        assert back == first
        assert cached == prompt_tokens - 1 and restored(node) == cached
    finally:
        node.stop()


# -- falling back to a cold prompt (the tiny model: plumbing) -------------------------------------
PROMPT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(12))


def generate(node, model: str) -> int:
    """The prompt tokens evaluated for a raw prompt (ollama's prompt_eval_count)."""
    body = {"model": model, "prompt": PROMPT, "raw": True, "stream": False}
    r = httpx.post(
        node.url + "/api/generate", json={**body, "options": {"num_predict": 2}}, timeout=120
    )
    assert r.status_code == 200, r.text
    return r.json()["prompt_eval_count"]


def removals(node) -> list[tuple[str, str]]:
    return REMOVED.findall(node.log())


def saved_once(home: Path, models: dict[str, Path]) -> tuple[list[Path], int]:
    """Serve the prompt once on each model and stop the node, which saves the cells: the
    files, and how many tokens the cold prompt evaluated."""
    node = start_node(home, models)
    cold = {generate(node, name) for name in models}
    assert node.stop() == 0, node.log()
    assert len(cold) == 1
    return saved_files(home), cold.pop()


def model_id(home: Path, name: str) -> str:
    engine = db.open_node_catalog(home / "llmlb.db")
    try:
        return prompt_cache.identity(catalog.resolve(engine, name))
    finally:
        engine.dispose()


def test_a_damaged_file_falls_back_to_a_cold_prompt_with_one_warning(tmp_path, tiny_gguf):
    home = tmp_path / "home"
    (path,), cold = saved_once(home, {"org/tiny": tiny_gguf})
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # a byte of the cells
    path.write_bytes(bytes(data))
    node = ServerProcess(home).start()
    try:
        assert generate(node, "org/tiny") == cold
        assert removals(node) == [(str(path), "its checksum does not match: it is damaged")]
        assert not path.exists()
    finally:
        node.stop()


def test_a_file_of_another_model_falls_back_to_a_cold_prompt_with_one_warning(tmp_path, tiny_gguf):
    """Two names over one file but different digests: the cells would fit, only the file's
    model id tells them apart."""
    home = tmp_path / "home"
    for name, digest in (("org/one", "1" * 64), ("org/two", "2" * 64)):
        register_file(home, name, tiny_gguf, digest=digest)
    node = ServerProcess(home).start()
    cold = generate(node, "org/one")
    assert node.stop() == 0
    (path,) = saved_files(home)
    foreign = path.parent.parent / model_id(home, "org/two")[:32] / path.name
    foreign.parent.mkdir()
    path.rename(foreign)
    node = ServerProcess(home).start()
    try:
        assert generate(node, "org/two") == cold
        assert removals(node) == [(str(foreign), "it was saved for another model")]
    finally:
        node.stop()


def test_cells_that_do_not_fit_the_model_fall_back_to_a_cold_prompt_with_one_warning(
    tmp_path, tiny_gguf
):
    """A file whose header names this model but whose cells are another model's shape (a
    forged or mislabelled file): llama.cpp refuses them, and the prompt is evaluated."""
    home = tmp_path / "home"
    wider = make_tiny_gguf(tmp_path / "wider.gguf", TinySpec(n_embd=128, n_head=8, n_head_kv=8))
    (path,), cold = saved_once(home, {"org/narrow": tiny_gguf})
    start_node(home, {"org/wide": wider}).stop()  # registered
    ident = model_id(home, "org/wide")
    with open(path, "rb") as fh:
        header, start = prompt_cache.read_header(fh)
        fh.seek(start)
        cells = fh.read()
    header.identity = ident
    raw = msgspec.msgpack.encode(header)
    forged = path.parent.parent / ident[:32] / path.name
    forged.parent.mkdir()
    forged.write_bytes(
        prompt_cache.MAGIC
        + len(raw).to_bytes(4, "little")
        + raw
        + prompt_cache.hashlib.sha256(raw).digest()
        + cells
    )
    path.unlink()
    node = ServerProcess(home).start()
    try:
        assert generate(node, "org/wide") == cold
        assert removals(node) == [(str(forged), "its cells do not fit this model")]
    finally:
        node.stop()
