"""What a user types for `pull` -> repo, revision, tag, file; and which files a repo's pull takes."""

import itertools

import pytest

from llmlb.errors import BadRequest, NotFound, ValidationError
from llmlb.jobs.downloader import MAX_PARTS, MIN_PART, split
from llmlb.sources.hf_refs import HfRef, Sibling, choose_files, parse_ref, quant_of


@pytest.mark.parametrize(
    "text, ref",
    [
        ("owner/repo", HfRef("owner/repo")),
        ("  owner/repo  ", HfRef("owner/repo")),
        ("owner/repo:Q4_K_M", HfRef("owner/repo", tag="Q4_K_M")),
        ("owner/repo:q8_0", HfRef("owner/repo", tag="q8_0")),
        ("owner/repo/sub/model-Q8_0.gguf", HfRef("owner/repo", file="sub/model-Q8_0.gguf")),
        ("hf.co/owner/repo:IQ4_XS", HfRef("owner/repo", tag="IQ4_XS")),
        ("huggingface.co/owner/repo", HfRef("owner/repo")),
        ("https://huggingface.co/owner/repo", HfRef("owner/repo")),
        ("https://huggingface.co/owner/repo/", HfRef("owner/repo")),
        (
            "https://huggingface.co/owner/repo/resolve/main/m.gguf?download=true",
            HfRef("owner/repo", revision="main", file="m.gguf"),
        ),
        (
            "https://huggingface.co/owner/repo/blob/abc123/dir/m.gguf",
            HfRef("owner/repo", revision="abc123", file="dir/m.gguf"),
        ),
        ("https://huggingface.co/owner/repo/tree/v1.0", HfRef("owner/repo", revision="v1.0")),
        ("https://hf.co/owner/repo", HfRef("owner/repo")),
        ("owner/repo:latest", HfRef("owner/repo")),  # ollama's word for the default
        ("hf.co/owner/repo:LATEST", HfRef("owner/repo")),
    ],
)
def test_parse_ref(text, ref):
    assert parse_ref(text) == ref


def test_a_forwarded_endpoint_is_understood_in_urls():
    ref = parse_ref("http://mirror:8090/o/r/resolve/main/x.gguf", endpoint="http://mirror:8090")
    assert ref == HfRef("o/r", "main", None, "x.gguf")


@pytest.mark.parametrize(
    "value, ok",
    [
        ("http://mirror:8090", "http://mirror:8090"),
        ("https://hf-mirror.com/", "https://hf-mirror.com"),
        ("https://host/sub/path", "https://host/sub/path"),
        ("ftp://host", None),
        ("http://", None),
        ("http://u:p@host", None),
        ("http://host/?q=1", None),
        ("http://host/#x", None),
        ("http://host:99999", None),
        ("http://ho st", None),
        ("javascript:alert(1)", None),
        ("", None),
    ],
)
def test_endpoints_sent_by_clients_are_checked(value, ok):
    from llmlb.sources.huggingface import check_endpoint

    if ok is None:
        with pytest.raises(ValidationError, match="HF_ENDPOINT"):
            check_endpoint(value)
    else:
        assert check_endpoint(value) == ok


def test_a_client_named_endpoint_never_gets_the_servers_token(monkeypatch):
    from llmlb.sources.huggingface import hub_for

    monkeypatch.setenv("HF_TOKEN", "server-secret")
    monkeypatch.setenv("HF_ENDPOINT", "https://own.example")
    monkeypatch.setenv("LLMLB_HF_ENDPOINTS", "http://other:1")
    assert hub_for(None, "http://other:1").token is None
    assert hub_for("client", "http://other:1").token == "client"
    assert hub_for(None, "https://own.example/").token == "server-secret"  # its own endpoint
    assert hub_for(None, None).token == "server-secret"


def test_a_client_may_name_only_the_endpoints_the_server_allows(monkeypatch):
    from llmlb.errors import Forbidden
    from llmlb.sources.huggingface import allowed_endpoint

    monkeypatch.setenv("HF_ENDPOINT", "https://own.example")
    monkeypatch.setenv("LLMLB_HF_ENDPOINTS", "http://mirror.local:8090/, https://b.example")
    assert allowed_endpoint("https://OWN.example/") == "https://OWN.example"
    assert allowed_endpoint("http://mirror.local:8090") == "http://mirror.local:8090"
    for other in ("http://169.254.169.254", "http://mirror.local:8091", "https://b.example/x"):
        with pytest.raises(Forbidden) as refused:
            allowed_endpoint(other)
        assert refused.value.status == 403
        assert f"LLMLB_HF_ENDPOINTS={other}" in refused.value.message


def test_plans_read_back_from_a_row_are_checked_again():
    from llmlb.sources.hf_refs import Plan

    stored = {"repo": "o/r", "revision": "x", "name": "o/r", "format": "GGUF"}
    stored["files"] = [{"path": "../../escape.gguf", "size": 1}]
    with pytest.raises(ValidationError, match="unsafe file name"):
        Plan.from_json(stored)


def test_hf_endpoint_urls_are_understood(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.local:8080/")
    assert parse_ref("http://mirror.local:8080/owner/repo/resolve/main/x.gguf") == HfRef(
        "owner/repo", "main", None, "x.gguf"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "llama3",
        "owner/",
        "/repo",
        "owner/../etc",
        "own er/repo",
        "owner/repo:",
        "owner/repo:Q4;rm",
        "https://example.com/owner/repo",
        "owner/repo/x.gguf:Q4_K_M",
        "owner/repo/resolve/main",
        "owner/re$po",
    ],
)
def test_bad_refs_are_one_line_validation_errors(text):
    with pytest.raises(ValidationError) as info:
        parse_ref(text)
    assert "\n" not in info.value.message and info.value.message.startswith("invalid model name")


@pytest.mark.parametrize(
    "text, name",
    [
        ("owner/repo", "owner/repo"),
        ("owner/repo:q4_k_m", "owner/repo/Q4_K_M"),
        ("owner/repo/dir/My Model-Q8_0.gguf", "owner/repo/My-Model-Q8_0"),
        ("owner/repo/big-Q4_K_M-00001-of-00003.gguf", "owner/repo/big-Q4_K_M"),
        ("owner/repo/model.safetensors", "owner/repo/model"),
    ],
)
def test_model_names_are_valid_catalog_names(text, name):
    assert parse_ref(text).model_name == name


@pytest.mark.parametrize(
    "filename, quant",
    [
        ("Llama-3.2-3B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-0.5b-instruct-q8_0.gguf", "Q8_0"),
        ("model.IQ4_XS.gguf", "IQ4_XS"),
        ("model-f16.gguf", "F16"),
        ("model-BF16-00001-of-00002.gguf", "BF16"),
        ("Model-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("model.gguf", None),
    ],
)
def test_quant_of(filename, quant):
    assert quant_of(filename) == quant


def _sib(*names, size=10):
    return [
        Sibling(
            n, size, f"{i:064x}" if n.endswith((".gguf", ".safetensors")) else None, f"{i:040x}"
        )
        for i, n in enumerate(names)
    ]


GGUF_REPO = _sib("README.md", "m-Q2_K.gguf", "m-Q4_K_M.gguf", "m-Q8_0.gguf", "m-f16.gguf")


def test_default_gguf_choice_is_q4_k_m():
    fmt, files = choose_files(HfRef("o/r"), GGUF_REPO)
    assert fmt == "GGUF" and [f.path for f in files] == ["m-Q4_K_M.gguf"]
    assert files[0].role == "model" and files[0].sha256


def test_default_follows_the_preference_order_without_q4_k_m():
    _fmt, files = choose_files(HfRef("o/r"), _sib("m-F16.gguf", "m-Q8_0.gguf", "m-Q6_K.gguf"))
    assert [f.path for f in files] == ["m-Q6_K.gguf"]


def test_tag_is_case_insensitive_and_missing_tag_lists_what_exists():
    assert [f.path for f in choose_files(HfRef("o/r", tag="q8_0"), GGUF_REPO)[1]] == ["m-Q8_0.gguf"]
    with pytest.raises(
        NotFound, match="no Q5_K_M file in o/r on Hugging Face; available: F16, Q2_K, Q4_K_M, Q8_0"
    ):
        choose_files(HfRef("o/r", tag="Q5_K_M"), GGUF_REPO)


def test_split_gguf_takes_every_part_and_vision_repo_its_projector():
    repo = _sib(
        "m-Q4_K_M-00002-of-00003.gguf",
        "m-Q4_K_M-00001-of-00003.gguf",
        "m-Q4_K_M-00003-of-00003.gguf",
        "m-Q8_0.gguf",
        "mmproj-model-f32.gguf",
        "mmproj-model-f16.gguf",
    )
    fmt, files = choose_files(HfRef("o/r"), repo)
    assert fmt == "GGUF"
    assert [(f.path, f.role) for f in files] == [
        ("m-Q4_K_M-00001-of-00003.gguf", "model"),
        ("m-Q4_K_M-00002-of-00003.gguf", "part"),
        ("m-Q4_K_M-00003-of-00003.gguf", "part"),
        ("mmproj-model-f16.gguf", "projector"),
    ]
    _fmt, files = choose_files(HfRef("o/r", file="m-Q4_K_M-00002-of-00003.gguf"), repo)
    assert len(files) == 4 and files[0].path.endswith("00001-of-00003.gguf")


def test_ambiguous_candidates_are_listed():
    with pytest.raises(BadRequest) as info:
        choose_files(HfRef("o/r"), _sib("a/x-Q4_K_M.gguf", "b/y-Q4_K_M.gguf"))
    assert (
        "o/r/a/x-Q4_K_M.gguf" in info.value.message and "o/r/b/y-Q4_K_M.gguf" in info.value.message
    )
    with pytest.raises(BadRequest, match="several candidate"):
        choose_files(HfRef("o/r"), _sib("alpha.gguf", "beta.gguf"))


def test_explicit_file_and_missing_file():
    _fmt, files = choose_files(HfRef("o/r", file="m-Q8_0.gguf"), GGUF_REPO)
    assert [f.path for f in files] == ["m-Q8_0.gguf"]
    with pytest.raises(NotFound, match=r"file 'nope\.gguf' not found"):
        choose_files(HfRef("o/r", file="nope.gguf"), GGUF_REPO)
    with pytest.raises(BadRequest, match="not a GGUF or safetensors"):
        choose_files(HfRef("o/r", file="README.md"), GGUF_REPO)


def test_safetensors_repo_takes_shards_and_side_files():
    repo = _sib(
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "chat_template.jinja",
        "optimizer.pt",
        "onnx/model.safetensors",
    )
    fmt, files = choose_files(HfRef("o/r"), repo)
    assert fmt == "Safetensors"
    assert [f.path for f in files] == [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ]
    assert files[1].role == "model" and files[0].role == "extra"
    assert files[3].sha256 is None and files[3].blob_id  # non-LFS files are checked by git blob id


def test_repo_without_model_files():
    with pytest.raises(NotFound, match="no GGUF or safetensors"):
        choose_files(HfRef("o/r"), _sib("README.md", "config.json"))
    with pytest.raises(NotFound, match="no GGUF files"):
        choose_files(HfRef("o/r", tag="Q4_K_M"), _sib("model.safetensors"))


def test_parts_cover_the_file_exactly():
    assert split(100) == [[0, 100, 0]]
    for size in (MIN_PART * 2, MIN_PART * 2 + 1, 1 << 30, (1 << 30) * 5 + 7):
        parts = split(size)
        assert len(parts) <= MAX_PARTS
        assert parts[0][0] == 0 and parts[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
        assert all(p[1] - p[0] >= MIN_PART for p in parts)
