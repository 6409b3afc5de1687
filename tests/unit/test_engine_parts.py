"""Pure parts of the engine: prefix matching, KV sizes, request options."""

import json

import pytest

from llmlb.engine.base import GenOptions
from llmlb.engine.llama_loop import common_prefix
from llmlb.engine.memory import Shape, human
from llmlb.errors import BadRequest
from llmlb.jsonio import decode_as
from llmlb.server.requests import OllamaChat, OpenAIChat


@pytest.mark.parametrize(
    "a, b, n",
    [
        ([], [1, 2], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([1, 2, 3], [1, 2], 2),
        ([1, 2, 3, 4, 5], [1, 2, 9, 4, 5], 2),
        ([7], [8], 0),
        (list(range(1000)), [*range(777), -1], 777),
    ],
)
def test_common_prefix(a, b, n):
    assert common_prefix(a, b) == n == common_prefix(b, a)


def test_kv_bytes_count_every_layer_and_sequence():
    shape = Shape(layers=2, kv_heads=[4, 4], key_dim=16, value_dim=16)
    assert shape.kv_bytes(2048) == 2 * 4 * 32 * 2 * 2048
    grouped = Shape(layers=3, kv_heads=[2, 2, 8], key_dim=64, value_dim=32)
    assert grouped.kv_bytes(10) == (2 + 2 + 8) * 96 * 2 * 10


def test_human_sizes():
    assert human(512) == "512 B" and human(274_890_000_000) == "274.9 GB"


def options(raw: dict) -> GenOptions:
    """Sampling options as the node reads them: ollama's `options` object, typed at the door."""
    return decode_as(json.dumps({"model": "m", "options": raw}).encode(), OllamaChat).gen_options()


def test_options_default_to_ollamas():
    assert options({}) == GenOptions()
    assert GenOptions().repeat_penalty == 1.1 and GenOptions().top_p == 0.9


def test_every_sampling_option_is_read():
    opts = options({"temperature": 0, "top_k": 5, "top_p": 0.5, "min_p": 0.1,
                    "typical_p": 0.7, "repeat_penalty": 1.2, "repeat_last_n": -1,
                    "presence_penalty": 0.5, "frequency_penalty": -0.5, "seed": 9,
                    "stop": "x", "num_predict": 7})  # fmt: skip
    assert opts == GenOptions(temperature=0.0, top_k=5, top_p=0.5, min_p=0.1, typical_p=0.7,
                              repeat_penalty=1.2, repeat_last_n=-1, presence_penalty=0.5,
                              frequency_penalty=-0.5, seed=9, stop=["x"], max_tokens=7,
                              given=opts.given)  # fmt: skip
    # what the request set itself (a model's Modelfile parameters fill in only the rest)
    assert opts.given >= {"temperature", "top_k", "seed", "stop", "max_tokens"}


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("repeat_penalty", 0, "> 0.0"),
        ("presence_penalty", 2.5, "<= 2.0"),
        ("min_p", 1.5, "<= 1.0"),
        ("top_k", -1, ">= 0"),
        ("repeat_last_n", -2, ">= -1"),
        ("typical_p", "high", "Expected `float | null`, got `str`"),
        ("num_predict", 0, "num_predict must be at least 1"),
    ],
)
def test_bad_options_name_the_field(field, value, words):
    with pytest.raises(BadRequest) as err:
        options({field: value})
    assert "options" in err.value.message and words in err.value.message


def test_logprobs_fields():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    chat = decode_as(json.dumps({**body, "logprobs": True, "top_logprobs": 3}).encode(), OpenAIChat)
    opts = chat.gen_options()
    assert opts.logprobs and opts.top_logprobs == 3
    for kind in (OpenAIChat, OllamaChat):
        for extra, words in (({"top_logprobs": 2}, "needs logprobs"),
                             ({"logprobs": True, "top_logprobs": 21}, "<= 20"),
                             ({"logprobs": "yes"}, "Expected `bool`")):  # fmt: skip
            with pytest.raises(BadRequest) as err:
                decode_as(json.dumps({**body, **extra}).encode(), kind)
            assert words in err.value.message
