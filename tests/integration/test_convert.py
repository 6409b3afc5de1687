"""Safetensors -> GGUF (llmlb.convert) on tiny random checkpoints of every covered
architecture: llama.cpp, loading the converted file, computes the logits Hugging Face's
modeling code computes (written out in numpy: tests/support/tiny_hf.py)."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
from llama_cpp import Llama

from llmlb.convert import ConvertError
from llmlb.convert.vocab import pre_tokenizer
from llmlb.convert.writer import convert
from tests.support import tiny_hf
from tests.support.hf_checkpoint import bf16_bytes, write_safetensors

TOKENS = [1, 70, 80, 90, 100, 110, 120, 130]


def _logits(path, tokens) -> np.ndarray:
    llm = Llama(str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=1)
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)])
    finally:
        llm.close()


@pytest.mark.parametrize("kind", list(tiny_hf.ARCHS))
def test_each_covered_architecture_computes_what_hugging_face_computes(tmp_path, kind):
    directory = tiny_hf.make_checkpoint(tmp_path / kind, kind)
    convert(directory, tmp_path / "out.gguf", "F32")
    got = _logits(tmp_path / "out.gguf", TOKENS)
    want = tiny_hf.reference_logits(kind, tiny_hf.tensors(kind), TOKENS)
    # f16 KV cache and ggml's GELU table leave ~1e-3; a wrong transform is off by ~1
    assert np.abs(got - want).max() / np.abs(want).max() < 2e-2
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_bf16_weights_arrive_exactly(tmp_path):
    directory = tiny_hf.make_checkpoint(tmp_path / "bf16", "qwen2", dtype="BF16")
    convert(directory, tmp_path / "out.gguf", "F32")
    reader = gguf.GGUFReader(tmp_path / "out.gguf")
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    source = tiny_hf.tensors("qwen2")["model.embed_tokens.weight"]
    rounded = np.frombuffer(bf16_bytes(source), dtype="<u2").astype(np.uint32) << 16
    assert np.array_equal(np.asarray(embd.data).reshape(-1), rounded.view(np.float32))


def _vocab_only_gguf(path, pieces, dummy_prefix: bool):
    """What llama.cpp's converter writes for these SentencePiece pieces, written directly."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([p.encode() for p, _, _ in pieces])
    w.add_token_scores([s for _, s, _ in pieces])
    w.add_token_types([t for _, _, t in pieces])
    w.add_add_space_prefix(dummy_prefix)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()


def _spm_checkpoint(directory, pieces, dummy_prefix: bool):
    directory = tiny_hf.make_checkpoint(directory, "llama")
    cfg = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**cfg, "vocab_size": len(pieces)}))
    (directory / "tokenizer.model").write_bytes(tiny_hf.sentencepiece_model(pieces, dummy_prefix))
    t = tiny_hf.tensors("llama")  # the embedding rows follow the vocabulary
    t["model.embed_tokens.weight"] = np.ones((len(pieces), tiny_hf.HIDDEN), dtype=np.float32)
    write_safetensors(directory / "model.safetensors", t, "F32")
    return directory


def test_a_sentencepiece_vocabulary_tokenizes_as_its_pieces_say(tmp_path):
    words = (
        "\u2581h",
        "\u2581he",
        "\u2581hell",
        "\u2581hello",
        "he",
        "ll",
        "hell",
        "hello",
        "\u2581wor",
    )
    pieces = tiny_hf.byte_pieces(words)
    texts = ("hello world", "the hello", "  hello\nworld ünï 42", "<s>hello</s>")
    tokenizers = {}
    for prefix in (True, False):
        directory = _spm_checkpoint(tmp_path / f"spm-{prefix}", pieces, prefix)
        convert(directory, tmp_path / f"out-{prefix}.gguf", "F32")
        _vocab_only_gguf(tmp_path / f"ref-{prefix}.gguf", pieces, prefix)
        got = Llama(str(tmp_path / f"out-{prefix}.gguf"), vocab_only=True, verbose=False)
        ref = Llama(str(tmp_path / f"ref-{prefix}.gguf"), vocab_only=True, verbose=False)
        for text in texts:
            assert got.tokenize(text.encode(), special=True) == ref.tokenize(
                text.encode(), special=True
            )
        tokenizers[prefix] = got
    # the dummy prefix (tokenizer.model's normalizer) carried over: a space goes in front
    with_prefix = tokenizers[True].tokenize(b"hello", add_bos=False)
    assert with_prefix == tokenizers[False].tokenize(b" hello", add_bos=False)
    assert with_prefix != tokenizers[False].tokenize(b"hello", add_bos=False)


def test_an_uncovered_architecture_is_refused_naming_the_covered_ones(tmp_path):
    directory = tiny_hf.make_checkpoint(tmp_path / "bert", "llama")
    cfg = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertModel"]}))
    with pytest.raises(ConvertError) as err:
        convert(directory, tmp_path / "out.gguf")
    assert "architecture 'BertModel' cannot be converted" in err.value.message
    assert "Gemma3ForCausalLM" in err.value.message and "Phi3ForCausalLM" in err.value.message


def test_a_truncated_shard_is_refused(tmp_path):
    directory = tiny_hf.make_checkpoint(tmp_path / "cut", "llama")
    shard = directory / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ConvertError, match="truncated or corrupt"):
        convert(directory, tmp_path / "out.gguf")


def _byte_level(*steps) -> dict:
    return {"pre_tokenizer": {"type": "Sequence", "pretokenizers": list(steps)}}


LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def test_byte_level_pre_tokenizers_are_told_apart():
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}
    split = {"type": "Split", "pattern": {"Regex": LLAMA3}, "behavior": "Isolated"}
    assert pre_tokenizer(_byte_level(split, byte_level)) == "llama-bpe"
    qwen = {**split, "pattern": {"Regex": LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")}}
    assert pre_tokenizer(_byte_level(qwen, byte_level)) == "qwen2"
    digits = {"type": "Digits", "individual_digits": True}
    assert pre_tokenizer(_byte_level(digits, {**byte_level, "use_regex": True})) == "smollm"
    assert pre_tokenizer({"pre_tokenizer": {**byte_level, "use_regex": True}}) == "gpt-2"
    other = {**split, "pattern": {"Regex": r"\s+"}}
    with pytest.raises(ConvertError, match="pre-tokenizer is not one llmlb converts"):
        pre_tokenizer(_byte_level(other, byte_level))
