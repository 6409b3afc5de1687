import pytest

from llmlb.store.alias import base_alias, unique_alias


@pytest.mark.parametrize(
    "name, alias",
    [
        ("meta-llama/Llama-3.2-3B-Instruct", "llama-3.2-3b-instruct"),
        ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct"),
        ("TheBloke/Mistral-7B-v0.1_GGUF", "mistral-7b-v0.1"),
        ("org/Repo-GGUF/Q8_0", "repo-q8_0"),
        (
            "bartowski/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q8_0",
            "llama-3.2-1b-instruct-q8_0",
        ),
        ("tiny", "tiny"),
    ],
)
def test_alias_rule(name, alias):
    assert base_alias(name) == alias


def test_collisions_get_a_suffix():
    assert unique_alias("a/Model-GGUF", set()) == "model"
    assert unique_alias("b/model", {"model"}) == "model-2"
    assert unique_alias("c/MODEL", {"model", "model-2"}) == "model-3"
