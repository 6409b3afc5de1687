"""The batched engine on a real model (SmolLM2-135M-Instruct) through a real node server.

Claims that depend on real text: answers, batching that changes nothing, seeds, penalties,
log probabilities, prompt reuse. Every generation is bounded (max_tokens / num_predict).
"""

from __future__ import annotations

import json
import math
import random
import re
import string
import threading

import httpx
import openai
import pytest

from tests.e2e.conftest import NodeSpec

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "Who wrote Hamlet?",
    "What do bees make?",
    "What is the largest ocean?",
    "Name a planet of the solar system.",
    "What is the boiling point of water?",
    "Give me a word that rhymes with cat.",
]
FILLER = (
    "The harbour town woke slowly; fishermen mended nets, gulls argued over scraps, and the "
    "baker's ovens breathed warm air into the narrow streets while the tide turned. "
)


NODE = NodeSpec({"HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2"}, env={"LLMLB_NUM_PARALLEL": "8"})


MODEL = "smollm2-135m-instruct"


def ask(oai, question: str, **kw):
    kw.setdefault("max_tokens", 24)
    return oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], **kw
    )


def test_paris_at_temperature_zero(oai):
    r = ask(oai, "What is the capital of France? Answer in one word.", temperature=0, max_tokens=16)
    assert "Paris" in r.choices[0].message.content


def test_eight_concurrent_requests_give_the_text_each_gives_alone(oai):
    # On the CPU backend a sequence's logits do not depend on what else is in the batch
    # (each stream has its own KV cells; every matrix row is computed alike), so greedy
    # decoding gives byte-identical text, and usage counts agree with each request alone.
    alone = [ask(oai, q, temperature=0, max_tokens=32) for q in QUESTIONS]
    together: list = [None] * len(QUESTIONS)

    def one(i: int) -> None:
        together[i] = ask(oai, QUESTIONS[i], temperature=0, max_tokens=32)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(QUESTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for a, b in zip(alone, together, strict=True):
        assert b is not None
        text = b.choices[0].message.content
        assert text == a.choices[0].message.content
        assert len(text.split()) >= 2  # real words, not an empty or broken answer
        assert b.choices[0].finish_reason == a.choices[0].finish_reason
        assert b.usage.prompt_tokens == a.usage.prompt_tokens > 20
        assert b.usage.completion_tokens == a.usage.completion_tokens
        assert 1 <= b.usage.completion_tokens <= 32
        if b.choices[0].finish_reason == "length":
            assert b.usage.completion_tokens == 32


def test_same_seed_same_text_also_after_other_requests(oai):
    kw = dict(temperature=0.9, seed=1234, max_tokens=24)
    first = ask(oai, "Write a poem about the sea.", **kw).choices[0].message.content
    # other requests in between: other prompts, other seeds, one beside a concurrent one
    ask(oai, "Write a poem about the mountains.", temperature=0.9, seed=5, max_tokens=12)
    side = threading.Thread(target=ask, args=(oai, "Tell me a joke."), kwargs={"max_tokens": 24})
    side.start()
    again = ask(oai, "Write a poem about the sea.", **kw).choices[0].message.content
    side.join(300)
    assert again == first
    other_seed = ask(oai, "Write a poem about the sea.", **{**kw, "seed": 99})
    assert other_seed.choices[0].message.content != first


def _enum(n: int) -> list[str]:
    rng = random.Random(n)
    return sorted({"".join(rng.choices(string.ascii_lowercase, k=10)) for _ in range(2 * n)})[:n]


def test_replies_held_to_a_4096_value_enum_beside_a_stream(oai):
    # A random word at temperature 1 is a token the grammar refuses at first: the vocabulary
    # is filtered on the grammar thread while the loop decodes the stream beside it.
    values = _enum(4096)
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": {"enum": values}}}
    alone = ask(oai, QUESTIONS[0], temperature=0, max_tokens=32).choices[0].message.content
    held: list[str] = []

    def hold(seed: int) -> None:
        r = ask(oai, "Pick a word.", temperature=1.0, seed=seed, response_format=fmt)
        held.append(json.loads(r.choices[0].message.content))

    threads = [threading.Thread(target=hold, args=(seed,)) for seed in (1, 2, 3, 1)]
    for t in threads:
        t.start()
    beside = ask(oai, QUESTIONS[0], temperature=0, max_tokens=32).choices[0].message.content
    for t in threads:
        t.join(300)
    assert beside == alone
    assert len(held) == 4 and all(v in values for v in held), held
    again = ask(oai, "Pick a word.", temperature=1.0, seed=1, response_format=fmt)
    assert held.count(json.loads(again.choices[0].message.content)) >= 2  # seed 1, thrice


def test_each_penalty_changes_the_output(oll):
    plain = {"temperature": 0, "num_predict": 40, "repeat_penalty": 1.0}

    def reply(prompt: str, **options) -> str:
        r = oll.chat(model=MODEL, messages=[{"role": "user", "content": prompt}],
                     options={**plain, **options})  # fmt: skip
        return r.message.content

    poem = "Write a short poem about the sea."
    base = reply(poem)
    for options in ({"repeat_penalty": 1.3}, {"presence_penalty": 1.0}, {"frequency_penalty": 1.0}):
        assert reply(poem, **options) != base, options

    # and the ones that count repeats cut a repetition short. Counted (repeated words of the
    # reply), not matched, and on a pattern the prompt itself repeats eight times, which even
    # a small model continues at temperature 0 whatever the CPU's float path (asked in words
    # to repeat "apple", SmolLM2 said it once on an AMD EPYC, twenty times here)
    def repeats(**options) -> int:
        r = oll.generate(model=MODEL, prompt="one, two, " * 8, raw=True,
                         options={**plain, **options})  # fmt: skip
        words = re.findall(r"\w+", r.response.lower())
        return len(words) - len(set(words))

    unpenalised = repeats()
    assert unpenalised >= 5  # without a penalty the pattern goes on
    for options in ({"repeat_penalty": 1.3}, {"frequency_penalty": 1.0}):
        assert repeats(**options) < unpenalised, options


def _check_entries(entries: list[dict], n_top: int) -> None:
    for e in entries:
        assert isinstance(e["token"], str) and e["logprob"] <= 0.0
        assert e["bytes"] == list(e["token"].encode())
        tops = e["top_logprobs"]
        assert len(tops) == n_top
        assert [t["logprob"] for t in tops] == sorted((t["logprob"] for t in tops), reverse=True)
        assert sum(math.exp(t["logprob"]) for t in tops) <= 1.0 + 1e-6
        # greedy without penalties: the chosen token is the most likely one
        assert e["token"] == tops[0]["token"] and e["logprob"] == pytest.approx(tops[0]["logprob"])


def test_logprobs_are_present_and_well_formed(node, oai):
    kw = dict(temperature=0, max_tokens=8, logprobs=True, top_logprobs=3,
              extra_body={"repeat_penalty": 1.0})  # fmt: skip
    r = ask(oai, "Tell me about the moon.", **kw)
    entries = [e.model_dump() for e in r.choices[0].logprobs.content]
    assert r.choices[0].finish_reason == "length" and len(entries) == r.usage.completion_tokens == 8
    assert "".join(e["token"] for e in entries) == r.choices[0].message.content
    _check_entries(entries, 3)

    # streamed: the chunks' log probabilities add up to the same list
    stream = ask(oai, "Tell me about the moon.", stream=True, **kw)
    streamed = [e.model_dump() for c in stream if c.choices and c.choices[0].logprobs
                for e in c.choices[0].logprobs.content]  # fmt: skip
    assert streamed == entries

    # the legacy completions API: parallel lists and offsets into the text
    c = oai.completions.create(model=MODEL, prompt="The moon is", max_tokens=6, temperature=0,
                               logprobs=2, extra_body={"repeat_penalty": 1.0})  # fmt: skip
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == c.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]
    assert all(len(top) <= 2 and max(top.values()) <= 0 for top in lp.top_logprobs)

    # ollama: top-level logprobs on /api/chat, streamed and not
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me about the moon."}],
            "logprobs": True, "top_logprobs": 3,
            "options": {"temperature": 0, "num_predict": 8, "repeat_penalty": 1.0}}  # fmt: skip
    whole = httpx.post(node.url + "/api/chat", json={**body, "stream": False}, timeout=300).json()
    assert len(whole["logprobs"]) == 8
    _check_entries(whole["logprobs"], 3)
    lines = httpx.post(node.url + "/api/chat", json=body, timeout=300).text.splitlines()
    parts = [e for line in lines for e in json.loads(line).get("logprobs") or []]
    assert parts == whole["logprobs"]


def test_logprobs_options_are_validated(oai):
    with pytest.raises(openai.BadRequestError) as err:
        ask(oai, "hi", logprobs=True, top_logprobs=21)
    assert "top_logprobs" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        ask(oai, "hi", top_logprobs=2)
    assert "logprobs" in err.value.body["message"]


def test_second_turn_of_a_long_chat_evaluates_only_the_new_tokens(oll, oai):
    history = [{"role": "system", "content": "You are a patient storyteller."}]
    for i in range(4):
        history.append({"role": "user", "content": f"Part {i}: " + FILLER * 4})
        history.append({"role": "assistant", "content": "And then " + FILLER * 3})
    history.append({"role": "user", "content": "What happens next?"})
    options = {"temperature": 0, "num_predict": 12}
    first = oll.chat(model=MODEL, messages=history, options=options)
    assert first.prompt_eval_count > 1000  # all of it evaluated (nothing like it was cached)
    turn2 = [*history, {"role": "assistant", "content": first.message.content},
             {"role": "user", "content": "And the baker?"}]  # fmt: skip
    second = oll.chat(model=MODEL, messages=turn2, options=options)
    # only the reply's end, the new message and the template's markers are new
    assert second.prompt_eval_count < 30
    # the OpenAI shape says the same with cached_tokens, as llama-server does
    third = oai.chat.completions.create(
        model=MODEL, messages=[*turn2, {"role": "assistant", "content": second.message.content},
                               {"role": "user", "content": "Thanks."}],
        max_tokens=4, temperature=0,
    )  # fmt: skip
    cached = third.usage.prompt_tokens_details.cached_tokens
    assert third.usage.prompt_tokens - 30 < cached < third.usage.prompt_tokens


def test_embeddings_batch_and_ps_shows_one_row_per_model(node, oll):
    oll.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}], options={"num_predict": 2})
    vectors = oll.embed(model=MODEL, input=["one", "two words", "and three words"]).embeddings
    assert len(vectors) == 3 and len({tuple(v) for v in vectors}) == 3
    assert all(abs(sum(x * x for x in v) - 1) < 1e-3 for v in vectors)
    # decoded together, each input still gets the vector it gets alone
    alone = oll.embed(model=MODEL, input=["two words"]).embeddings[0]
    assert alone == pytest.approx(vectors[1], abs=1e-5)
    rows = [m for m in httpx.get(node.url + "/api/ps").json()["models"] if "SmolLM2" in m["name"]]
    assert len(rows) == 1 and rows[0]["kind"] == "chat+embed"
