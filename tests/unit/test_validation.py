import pytest

from llmlb.errors import ValidationError
from llmlb import validation as v


@pytest.mark.parametrize(
    "name",
    [
        "meta-llama/Llama-3.2-3B-Instruct",
        "qwen2.5-0.5b",
        "a",
        "Org_1/model.v2/file-Q4_K_M.gguf",
    ],
)
def test_good_names_pass(name):
    assert v.check_name(name) == name


@pytest.mark.parametrize(
    "name, words",
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("bad name", "only letters, digits"),
        ("evil;rm -rf", "only letters, digits"),
        ("model:tag", "only letters, digits"),
        ("a\\b", "only letters, digits"),
        ("/etc/passwd", "must not start with '/'"),
        ("../../etc", "'..' segments"),
        ("a/../b", "'..' segments"),
        ("a/./b", "'..' segments"),
        ("a//b", "empty path segment"),
        ("a/", "empty path segment"),
        ("x" * 201, "longer than"),
    ],
)
def test_bad_names_are_refused_with_a_reason(name, words):
    with pytest.raises(ValidationError) as err:
        v.check_name(name)
    assert words in err.value.message
    assert "\n" not in err.value.message


def test_name_must_be_a_string():
    with pytest.raises(ValidationError):
        v.check_name(None)


def test_format():
    assert v.check_format("GGUF") == "GGUF"
    assert v.check_format("Safetensors") == "Safetensors"
    with pytest.raises(ValidationError, match="GGUF or Safetensors"):
        v.check_format("gguf2")


def test_source():
    for ok in ("Local", "Ollama", "HuggingFace"):
        assert v.check_source(ok) == ok
    with pytest.raises(ValidationError, match="source"):
        v.check_source("S3")


@pytest.mark.parametrize("size", [0, -1, 1.5, "10", True, None])
def test_size_must_be_positive_int(size):
    with pytest.raises(ValidationError, match="greater than 0"):
        v.check_size(size)


def test_size_ok():
    assert v.check_size(1) == 1


def test_path_must_exist(tmp_path):
    f = tmp_path / "m.gguf"
    with pytest.raises(ValidationError, match="does not exist"):
        v.check_path(f)
    f.write_bytes(b"x")
    assert v.check_path(f) == str(f)


def test_ranges():
    assert v.check_range("temperature", 0.7, 0.0, 2.0) == 0.7
    with pytest.raises(ValidationError, match=r"temperature must be a number from 0\.0 to 2\.0"):
        v.check_range("temperature", 2.5, 0.0, 2.0)
    with pytest.raises(ValidationError):
        v.check_range("top_p", "high", 0.0, 1.0)
