"""The generated tiny GGUF is a real model: llama-cpp-python loads it and generates."""

import gguf

from tests.support.tiny_model import TinySpec, make_tiny_gguf, param_count


def test_tiny_model_loads_and_generates(tiny_gguf):
    from llama_cpp import Llama

    llm = Llama(model_path=str(tiny_gguf), n_ctx=256, verbose=False, seed=1)
    out = llm.create_completion("Hello", max_tokens=8, temperature=0.0)
    assert out["usage"]["completion_tokens"] > 0
    assert out["usage"]["prompt_tokens"] >= 2  # <s> plus the bytes of the prompt
    chat = llm.create_chat_completion(messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert chat["choices"][0]["message"]["role"] == "assistant"


def test_tokenizer_is_byte_level(tiny_gguf):
    from llama_cpp import Llama

    llm = Llama(model_path=str(tiny_gguf), n_ctx=64, verbose=False, vocab_only=True)
    text = "héllo ✓"
    tokens = llm.tokenize(text.encode(), add_bos=False)
    assert llm.detokenize(tokens).decode().strip() == text


def test_metadata_options(tmp_path):
    spec = TinySpec(license="apache-2.0", context_length=4096, n_embd=32, n_layer=1, n_ff=64)
    path = make_tiny_gguf(tmp_path / "m.gguf", spec)
    reader = gguf.GGUFReader(str(path))
    fields = reader.fields
    assert bytes(fields["general.license"].parts[-1]).decode() == "apache-2.0"
    assert int(fields["llama.context_length"].parts[-1][0]) == 4096
    assert "im_start" in bytes(fields["tokenizer.chat_template"].parts[-1]).decode()
    n = sum(int(t.n_elements) for t in reader.tensors)
    assert n == param_count(spec)


def test_quantized_variants_load(tmp_path):
    from llama_cpp import Llama

    for dtype in ("F16", "Q8_0"):
        path = make_tiny_gguf(tmp_path / f"{dtype}.gguf", dtype=dtype)
        llm = Llama(model_path=str(path), n_ctx=64, verbose=False)
        assert llm.create_completion("a", max_tokens=2)["usage"]["completion_tokens"] > 0
