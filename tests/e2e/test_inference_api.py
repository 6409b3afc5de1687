"""The node's inference APIs on the real engine, driven by the official openai and ollama clients."""

import json

import httpx
import openai
import pytest

from tests.e2e.conftest import NodeSpec

NODE = NodeSpec({"org/tiny": "tiny_gguf", "org/endless": "endless_gguf", "org/raw": "endless_gguf"})


def test_ollama_chat_streaming(oll):
    chunks = list(
        oll.chat(
            model="endless",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            options={"num_predict": 12, "seed": 1},
        )
    )
    assert chunks[-1].done and chunks[-1].done_reason == "length"
    assert chunks[-1].eval_count == 12 and chunks[-1].prompt_eval_count > 5
    assert chunks[-1].total_duration > 0
    assert "".join(c.message.content for c in chunks[:-1])


def test_ollama_chat_not_streaming_is_deterministic_with_seed(oll):
    kwargs = dict(
        model="org/endless",
        messages=[{"role": "user", "content": "hello"}],
        stream=False,
        options={"num_predict": 10, "seed": 42, "temperature": 0.9},
    )
    a, b = oll.chat(**kwargs), oll.chat(**kwargs)
    assert a.message.role == "assistant" and a.done
    assert a.message.content == b.message.content and a.eval_count == 10


def test_ollama_generate(oll):
    r = oll.generate(model="endless", prompt="Once", options={"num_predict": 6}, stream=False)
    assert r.done and r.eval_count == 6 and r.response
    parts = list(
        oll.generate(model="endless", prompt="Once", options={"num_predict": 6}, stream=True)
    )
    assert parts[-1].done and sum(1 for p in parts if p.response) >= 1
    # a model of its own: nothing cached, so every prompt token is evaluated
    raw = oll.generate(model="org/raw", prompt="abc", raw=True, options={"num_predict": 3})
    assert raw.prompt_eval_count == 5  # <s> ▁ a b c: no chat template applied


def test_ollama_stop_sequence(oll):
    full = oll.generate(
        model="endless", prompt="x", options={"num_predict": 40, "seed": 5}
    ).response
    cut = full[5:7]
    r = oll.generate(
        model="endless", prompt="x", options={"num_predict": 40, "seed": 5, "stop": [cut]}
    )
    assert cut not in r.response and full.startswith(r.response)


def test_ollama_embed(oll):
    r = oll.embed(model="tiny", input=["hello", "world"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 64
    assert abs(sum(x * x for x in r.embeddings[0]) - 1.0) < 1e-3  # unit length


def test_ollama_ps_and_version(oll, node):
    oll.generate(model="tiny", prompt="a", options={"num_predict": 2})
    models = {m.model: m for m in oll.ps().models}
    assert "org/tiny" in models
    assert models["org/tiny"].size > 470_000 and models["org/tiny"].expires_at is not None
    assert httpx.get(node.url + "/api/version").json()["version"]
    assert httpx.get(node.url + "/").text == "llmlb is running"


def test_openai_chat(oai):
    r = oai.chat.completions.create(
        model="endless", messages=[{"role": "user", "content": "hi"}], max_tokens=7, seed=3
    )
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7 and r.usage.prompt_tokens > 5


def test_openai_chat_streaming_with_usage(oai):
    stream = oai.chat.completions.create(
        model="endless",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=9,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == 9 and chunks[-1].choices == []
    assert chunks[-2].choices[0].finish_reason == "length"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


def test_openai_completion_and_embeddings_and_models(oai):
    r = oai.completions.create(model="endless", prompt="The", max_tokens=5)
    assert r.usage.completion_tokens == 5 and r.choices[0].text
    e = oai.embeddings.create(model="tiny", input="hello")
    assert len(e.data[0].embedding) == 64
    ids = [m.id for m in oai.models.list().data]
    assert {"org/tiny", "org/endless"} <= set(ids)
    assert oai.models.retrieve("org/tiny").id == "org/tiny"


def test_openai_errors(oai, node):
    with pytest.raises(openai.NotFoundError) as err:
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["message"] == "model 'nope' not found"
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], temperature=5
        )
    assert "temperature" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("nope")


@pytest.mark.parametrize(
    "path, body, status, words",
    [
        ("/api/chat", b"{not json", 400, "not valid JSON"),
        ("/api/chat", b"[1, 2]", 400, "JSON object"),
        (
            "/api/chat",
            json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(),
            400,
            "'model'",
        ),
        ("/api/chat", json.dumps({"model": "tiny", "messages": "hi"}).encode(), 400, "'messages'"),
        (
            "/api/chat",
            json.dumps(
                {"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}
            ).encode(),
            400,
            "role",
        ),
        (
            "/api/chat",
            json.dumps(
                {
                    "model": "tiny",
                    "messages": [{"role": "user", "content": "x"}],
                    "options": {"temperature": "hot"},
                }
            ).encode(),
            400,
            "temperature",
        ),
        (
            "/api/chat",
            json.dumps(
                {
                    "model": "tiny",
                    "messages": [{"role": "user", "content": "x"}],
                    "keep_alive": "forever",
                }
            ).encode(),
            400,
            "keep_alive",
        ),
        (
            "/api/chat",
            json.dumps(
                {
                    "model": "tiny",
                    "messages": [{"role": "user", "content": "x", "images": ["aGVsbG8="]}],
                }
            ).encode(),
            400,
            "not a PNG",
        ),
        (
            "/api/generate",
            json.dumps({"model": "ghost", "prompt": "x"}).encode(),
            404,
            "model 'ghost' not found",
        ),
        ("/api/embed", json.dumps({"model": "tiny", "input": 5}).encode(), 400, "'input'"),
        (
            "/v1/chat/completions",
            json.dumps({"model": "tiny", "messages": [], "max_tokens": 2}).encode(),
            400,
            "messages",
        ),
        (
            "/v1/chat/completions",
            json.dumps(
                {
                    "model": "tiny",
                    "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": "many",
                }
            ).encode(),
            400,
            "max_tokens",
        ),
    ],
)
def test_bad_input_is_4xx_with_the_field_named(node, path, body, status, words):
    r = httpx.post(node.url + path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    message = err["message"] if isinstance(err, dict) else err
    assert words in message


def test_images_for_a_model_without_vision(node):
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    r = httpx.post(
        node.url + "/api/chat",
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "what is this", "images": [png]}],
        },
    )
    assert r.status_code == 400 and r.json() == {
        "error": "model 'org/tiny' does not support images"
    }


def test_too_large_body_is_413(node):
    r = httpx.post(
        node.url + "/api/chat",
        content=b"x" * (65 * 1024 * 1024),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413


def test_metrics(node, oll):
    oll.generate(model="tiny", prompt="a", options={"num_predict": 2})
    text = httpx.get(node.url + "/metrics").text
    assert 'llmlb_requests_total{endpoint="/api/generate",status="200"}' in text
    assert "llmlb_tokens_generated_total" in text and "llmlb_loaded_models" in text
    assert "llmlb_time_to_first_token_seconds_count" in text and "llmlb_queue_depth" in text
