import pytest

from llmlb import validation as v
from llmlb.errors import ValidationError


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


@pytest.mark.parametrize(
    "name, why",
    [
        ("../../../../tmp/x/pwned.gguf", "'..' segment"),
        ("/tmp/x/abs.gguf", "absolute path"),
        ("sub/../../../../x2.gguf", "'..' segment"),
        ("a\\b.gguf", "backslash"),
        ("a\x00b.gguf", "control character"),
        ("a\nb.gguf", "control character"),
        ("a\x9bb.gguf", "control character"),
        ("a//b.gguf", "empty segment"),
        ("a/", "empty segment"),
        ("./a.gguf", "'.' segment"),
        ("", "empty"),
        ("x" * 1001, "too long"),
    ],
)
def test_hub_file_names_are_checked_like_model_names(name, why):
    with pytest.raises(ValidationError, match=why):
        v.check_hub_path(name)


@pytest.mark.parametrize("name", ["m.gguf", "dir/sub/m-Q8_0.gguf", "my model (1).gguf", "été.gguf"])
def test_ordinary_hub_file_names_pass(name):
    assert v.check_hub_path(name) == name


def test_inside_refuses_a_join_that_leaves_the_directory(tmp_path):
    base = tmp_path / "partial" / "o" / "r"
    assert v.inside(base, "a/b.gguf") == base / "a" / "b.gguf"
    (tmp_path / "partial" / "o").mkdir(parents=True)
    base.symlink_to(tmp_path)  # a link that leads out: the resolved path decides
    with pytest.raises(ValidationError, match="outside"):
        v.inside(tmp_path / "partial" / "o", "r/m.gguf")
