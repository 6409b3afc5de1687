"""Names as people type them: tags, `:latest`, and the suggestions for a typo."""

import pytest

from llmlb.errors import ValidationError
from llmlb.store import names


@pytest.mark.parametrize(
    "typed, split",
    [
        ("smollm2", ("smollm2", None)),
        ("smollm2:latest", ("smollm2", None)),
        ("smollm2:LATEST", ("smollm2", None)),
        ("owner/repo:q4_1", ("owner/repo", "Q4_1")),
        ("owner/repo/Q8_0", ("owner/repo/Q8_0", None)),
    ],
)
def test_split_tag(typed, split):
    assert names.split_tag(typed) == split


@pytest.mark.parametrize("typed", [":latest", "a:b:c", "a:", "a:-x", "../x:latest", "a b:latest"])
def test_bad_tags_and_names_are_refused(typed):
    with pytest.raises(ValidationError):
        names.split_tag(typed)


def test_closest_names_ignore_case_and_tags():
    local = ["smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "qwen2.5-0.5b"]
    assert names.closest("smolm2-135m-instruct", local) == ["smollm2-135m-instruct"]
    assert names.closest("smollm2-135M-instruct:latest", local) == ["smollm2-135m-instruct"]
    assert names.closest("llama3", local) == []


def test_unknown_model_message():
    assert names.UnknownModel("x").message == "model 'x' not found"
    err = names.UnknownModel("smolm2", ["smollm2", "smollm3"])
    assert err.message == "model 'smolm2' not found; did you mean smollm2 or smollm3?"
    assert err.status == 404 and str(err) == err.message
