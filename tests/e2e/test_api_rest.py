"""Issue 24's API items on a real model (SmolLM2), through the official clients: seeds that
repeat whether or not the prompt was cached, `n` choices, several prompts and `echo`, log
probability bytes, integer ranges in schemas, ollama's `context`, embedding `dimensions` and
token arrays, `keep_alive: 0` for every context of a model, GGUF metadata in `show`, and
tagged names in `/api/tags`. Generations are bounded; assertions are relations that hold
on any CPU, never a model's exact words."""

from __future__ import annotations

import math

import httpx
import ollama
from pydantic import BaseModel, Field

from tests.e2e.conftest import NodeSpec
from tests.support.procs import wait_for

MODEL = "smollm2-135m-instruct"
FILLER = (
    "The harbour town woke slowly; fishermen mended nets, gulls argued over scraps, and the "
    "baker's ovens breathed warm air into the narrow streets while the tide turned. "
)


NODE = NodeSpec({"HuggingFaceTB/SmolLM2-135M-Instruct-GGUF": "smollm2"})


def test_the_same_seed_gives_the_same_text_whether_or_not_the_prompt_was_cached(oai):
    # ~240 tokens: long enough that a cached prefix and a fresh one were computed differently
    ask = [{"role": "user", "content": FILLER * 6 + "Tell me what happens next."}]
    texts = []
    for _ in range(3):
        r = oai.chat.completions.create(model=MODEL, messages=ask, seed=1, temperature=1.0,
                                        max_tokens=24)  # fmt: skip
        texts.append(r.choices[0].message.content)
        assert r.usage.prompt_tokens > 200
    assert texts[0] == texts[1] == texts[2]
    other = oai.chat.completions.create(model=MODEL, messages=ask, seed=2, temperature=1.0,
                                        max_tokens=24)  # fmt: skip
    assert other.choices[0].message.content != texts[0]  # the seed, not chance, repeats them


def test_n_choices_each_their_own_and_repeatable_with_a_seed(oai):
    ask = [{"role": "user", "content": "Say something about the sea."}]
    first = oai.chat.completions.create(model=MODEL, messages=ask, n=3, seed=7,
                                        temperature=1.0, max_tokens=12)  # fmt: skip
    assert [c.index for c in first.choices] == [0, 1, 2]
    texts = [c.message.content for c in first.choices]
    assert len(set(texts)) > 1  # seeds 7, 8, 9
    again = oai.chat.completions.create(model=MODEL, messages=ask, n=3, seed=7,
                                        temperature=1.0, max_tokens=12)  # fmt: skip
    assert [c.message.content for c in again.choices] == texts
    assert 3 <= first.usage.completion_tokens <= 3 * 12  # every choice's tokens
    streamed: dict[int, str] = {}
    finished: dict[int, str] = {}
    usage = None
    for event in oai.chat.completions.create(model=MODEL, messages=ask, n=2, max_tokens=8,
                                             stream=True, stream_options={"include_usage": True}):  # fmt: skip
        for c in event.choices:
            streamed[c.index] = streamed.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finished[c.index] = c.finish_reason
        usage = event.usage or usage
    assert set(streamed) == set(finished) == {0, 1} and all(streamed.values())
    assert usage is not None and usage.completion_tokens >= 2


def test_several_prompts_and_echo_in_legacy_completions(oai):
    prompts = ["The sky is", "Water is"]
    r = oai.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=4, echo=True)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    for c in r.choices:
        assert c.text.startswith(prompts[c.index // 2]) and len(c.text) > len(prompts[0]) - 2
    plain = oai.completions.create(model=MODEL, prompt=prompts[0], max_tokens=4)
    assert not plain.choices[0].text.startswith(prompts[0])


def test_token_bytes_rebuild_the_text_also_of_characters_split_across_tokens(oai):
    ask = [{"role": "user", "content": "Write 'good morning' in Japanese."}]
    r = oai.chat.completions.create(model=MODEL, messages=ask, max_tokens=16, temperature=0,
                                    logprobs=True, top_logprobs=2)  # fmt: skip
    tokens = r.choices[0].logprobs.content
    raw = b"".join(bytes(t.bytes) for t in tokens)
    assert any(b > 0x7F for b in raw)  # (it writes Japanese: several tokens per character)
    assert raw.decode("utf-8", "ignore") == r.choices[0].message.content
    assert "\ufffd" not in r.choices[0].message.content  # cut mid-character: dropped, not U+FFFD
    assert all(bytes(t.bytes).decode("utf-8", "replace") == t.token for t in tokens)


class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=150)


def test_integer_ranges_of_a_pydantic_model_hold(oai):
    ask = [{"role": "user", "content": "Invent a person, very old."}]
    r = oai.beta.chat.completions.parse(model=MODEL, messages=ask, response_format=Person,
                                        max_tokens=48, temperature=0)  # fmt: skip
    person = r.choices[0].message.parsed
    assert person is not None and 0 <= person.age <= 150


def test_generate_returns_its_context_and_continues_from_one(node):
    client = ollama.Client(host=node.url, timeout=120)
    first = client.generate(model=MODEL, prompt="Count: 1, 2,", options={"num_predict": 4})
    assert first.context and len(first.context) > first.eval_count
    second = client.generate(model=MODEL, prompt="And then?", context=first.context,
                             options={"num_predict": 4})  # fmt: skip
    assert second.context[: len(first.context)] == first.context
    assert len(second.context) > len(first.context)
    r = httpx.post(node.url + "/api/generate", json={"model": MODEL, "prompt": "x",
                   "context": [10**9], "stream": False}, timeout=60)  # fmt: skip
    assert r.status_code == 400 and "outside the vocabulary" in r.json()["error"]


def test_embeddings_take_dimensions_and_token_arrays(oai, node):
    full = oai.embeddings.create(model=MODEL, input="hello there")
    short = oai.embeddings.create(model=MODEL, input="hello there", dimensions=16)
    v, w = full.data[0].embedding, short.data[0].embedding
    assert len(w) == 16 < len(v)
    assert math.isclose(math.sqrt(sum(x * x for x in w)), 1.0, rel_tol=1e-4)
    scale = math.sqrt(sum(x * x for x in v[:16]))
    assert all(math.isclose(a, b / scale, abs_tol=1e-5) for a, b in zip(w, v[:16], strict=True))
    tokens = oai.embeddings.create(model=MODEL, input=[[1, 2, 3, 4], [5, 6]])
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 6
    r = httpx.post(node.url + "/api/embed", json={"model": MODEL, "input": "x",
                   "dimensions": 100000}, timeout=60)  # fmt: skip
    assert r.status_code == 400 and "dimensions" in r.json()["error"]


def test_keep_alive_0_unloads_every_context_of_the_model(node):
    client = ollama.Client(host=node.url, timeout=120)
    client.embed(model=MODEL, input="x")
    client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                options={"num_predict": 2})  # fmt: skip
    assert [m.model for m in client.ps().models]  # loaded: chat and embed
    client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                options={"num_predict": 2}, keep_alive=0)  # fmt: skip
    ps = lambda: httpx.get(node.url + "/api/ps").json()["models"]  # noqa: E731
    assert wait_for(lambda: ps() == [], 30), ps()


def test_show_gives_the_gguf_metadata_and_tags_give_tagged_names(node):
    client = ollama.Client(host=node.url, timeout=60)
    info = client.show(MODEL).modelinfo
    assert info["llama.block_count"] == 30 and info["general.architecture"] == "llama"
    assert "tokenizer.ggml.tokens" in info and info["tokenizer.ggml.tokens"] is None
    names = [m.model for m in client.list().models]
    assert names == ["HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:latest"]
    assert client.show(names[0]).modelinfo  # the tagged name is a name of the model
