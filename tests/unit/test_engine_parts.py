"""Pure parts of the engine: prefix matching, KV sizes, request options."""

import pytest

from llmlb.engine.base import GenOptions
from llmlb.engine.llama_loop import common_prefix
from llmlb.engine.memory import Shape, human
from llmlb.errors import BadRequest
from llmlb.server.inference import logprobs_from, options_from


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


def test_options_default_to_ollamas():
    assert options_from({}) == GenOptions()
    assert GenOptions().repeat_penalty == 1.1 and GenOptions().top_p == 0.9


def test_every_sampling_option_is_read():
    opts = options_from({"temperature": 0, "top_k": 5, "top_p": 0.5, "min_p": 0.1,
                         "typical_p": 0.7, "repeat_penalty": 1.2, "repeat_last_n": -1,
                         "presence_penalty": 0.5, "frequency_penalty": -0.5, "seed": 9,
                         "stop": "x"})  # fmt: skip
    assert opts == GenOptions(temperature=0.0, top_k=5, top_p=0.5, min_p=0.1, typical_p=0.7,
                              repeat_penalty=1.2, repeat_last_n=-1, presence_penalty=0.5,
                              frequency_penalty=-0.5, seed=9, stop=["x"])  # fmt: skip


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("repeat_penalty", 0, "greater than 0"),
        ("presence_penalty", 2.5, "between -2.0 and 2.0"),
        ("frequency_penalty", float("nan"), "between"),
        ("min_p", 1.5, "between 0.0 and 1.0"),
        ("top_k", -1, "between 0"),
        ("repeat_last_n", -2, "between -1"),
        ("typical_p", "high", "number"),
    ],
)
def test_bad_options_name_the_field(field, value, words):
    with pytest.raises(BadRequest) as err:
        options_from({field: value}, "options.")
    assert f"'options.{field}'" in err.value.message and words in err.value.message


def test_logprobs_fields():
    opts = GenOptions()
    logprobs_from(opts, True, 3)
    assert opts.logprobs and opts.top_logprobs == 3
    for want, top, words in ((None, 2, "needs 'logprobs'"), (True, 21, "between 0 and 20"),
                             ("yes", None, "boolean")):  # fmt: skip
        with pytest.raises(BadRequest) as err:
            logprobs_from(GenOptions(), want, top)
        assert words in err.value.message
