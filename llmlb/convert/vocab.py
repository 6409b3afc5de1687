"""The tokenizer, into the GGUF header: SentencePiece (tokenizer.model: Llama 2, Mistral,
Gemma, Phi-3) or byte-level BPE (tokenizer.json: Llama 3, SmolLM2, Qwen), as llama.cpp's
converter writes them, without the sentencepiece or transformers packages.

tokenizer.model is a protobuf of three parts that matter here (pieces with their scores and
types, and whether a space is put in front); it is read with a dozen lines rather than a
protobuf library. A BPE tokenizer's pre-tokenizer, which llama.cpp needs by name, is told
from the pre-tokenizer tokenizer.json declares (llama.cpp's converter hashes the output of
transformers' tokenizer instead).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from llmlb.convert import ConvertError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# the regexes of the Split pre-tokenizers llama.cpp implements, by its name for them
SPLITS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",  # noqa: E501
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",  # noqa: E501
}


@dataclass
class Vocab:
    model: str  # llama (SentencePiece) or gpt2 (byte-level BPE)
    tokens: list[bytes]
    types: list[int]
    scores: list[float] | None = None
    pre: str = "default"
    space_prefix: bool | None = None
    merges: list[str] = field(default_factory=list)


# -- SentencePiece --------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ConvertError("tokenizer.model is not a SentencePiece model (bad varint)")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message; values are ints or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ConvertError("tokenizer.model is not a SentencePiece model (bad wire type)")
        if pos > len(buf):
            raise ConvertError("tokenizer.model is truncated")
        yield num, wire, value


def read_sentencepiece(path: Path) -> tuple[list[tuple[bytes, float, int]], bool, int]:
    """(pieces as (text, score, type), add_dummy_prefix, model type) of a tokenizer.model."""
    pieces: list[tuple[bytes, float, int]] = []
    dummy_prefix, model_type = True, 1
    for num, wire, value in _fields(path.read_bytes()):
        if num == 1 and wire == 2:
            text, score, kind = b"", 0.0, NORMAL
            for n, w, v in _fields(value):
                if n == 1 and w == 2:
                    text = v
                elif n == 2 and w == 5:
                    score = struct.unpack("<f", v)[0]
                elif n == 3 and w == 0:
                    kind = v
            pieces.append((text, score, kind))
        elif num == 2 and wire == 2:  # trainer spec
            for n, w, v in _fields(value):
                if n == 3 and w == 0:
                    model_type = v
        elif num == 3 and wire == 2:  # normalizer spec
            for n, w, v in _fields(value):
                if n == 3 and w == 0:
                    dummy_prefix = bool(v)
    if not pieces:
        raise ConvertError("tokenizer.model holds no pieces")
    return pieces, dummy_prefix, model_type


def _looks_special(text: str) -> bool:
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def _sentencepiece(directory: Path, n_vocab: int) -> Vocab:
    pieces, dummy_prefix, model_type = read_sentencepiece(directory / "tokenizer.model")
    if model_type != 2:  # 1 unigram, 2 BPE
        raise ConvertError(
            "tokenizer.model is a unigram SentencePiece model; only BPE ones (Llama, Mistral, "
            "Gemma, Phi-3) can be converted"
        )
    tokens = [f"[PAD{i}]".encode() for i in range(n_vocab)]
    scores = [-10000.0] * n_vocab
    types = [UNUSED] * n_vocab
    for i, (piece, score, kind) in enumerate(pieces[:n_vocab]):
        tokens[i], scores[i], types[i] = piece, score, kind
    for token_id, content, special in _added(directory):
        if token_id < n_vocab:
            if special or _looks_special(content):
                types[token_id] = CONTROL
            else:
                content = content.replace("\u2581", " ")
                types[token_id] = USER_DEFINED
            tokens[token_id], scores[token_id] = content.encode(), -1000.0
    return Vocab("llama", tokens, types, scores, space_prefix=dummy_prefix)


def _added(directory: Path) -> list[tuple[int, str, bool]]:
    """Added tokens: added_tokens.json, tokenizer_config.json's decoder, tokenizer.json."""
    found: dict[int, tuple[str, bool]] = {}
    added = _json(directory / "added_tokens.json")
    if isinstance(added, dict):
        for text, token_id in added.items():
            if isinstance(token_id, int):
                found[token_id] = (str(text), False)
    decoder = (_json(directory / "tokenizer_config.json") or {}).get("added_tokens_decoder")
    if isinstance(decoder, dict):
        for token_id, data in decoder.items():
            if isinstance(data, dict) and isinstance(data.get("content"), str):
                found[int(token_id)] = (data["content"], bool(data.get("special")))
    for data in (_json(directory / "tokenizer.json") or {}).get("added_tokens") or []:
        if isinstance(data, dict) and isinstance(data.get("content"), str):
            found[int(data["id"])] = (data["content"], bool(data.get("special")))
    return [(i, text, special) for i, (text, special) in sorted(found.items())]


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConvertError(f"{path.name} is not valid JSON") from exc


# -- byte-level BPE -------------------------------------------------------------------------


def pre_tokenizer(tok: dict[str, Any]) -> str:
    """llama.cpp's name for the pre-tokenizer tokenizer.json declares."""
    pre = tok.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if regex in SPLITS:
            return SPLITS[regex]
    raise ConvertError(
        "tokenizer.json's pre-tokenizer is not one llmlb converts (GPT-2, SmolLM, Llama 3, "
        f"Qwen2 styles): {json.dumps(pre)[:160]}"
    )


def _bpe(directory: Path, n_vocab: int) -> Vocab:
    tok = _json(directory / "tokenizer.json")
    model = (tok or {}).get("model") or {}
    if (
        model.get("type") != "BPE"
        or model.get("byte_fallback")
        or not isinstance(model.get("vocab"), dict)
    ):
        raise ConvertError(
            "tokenizer.json is not a byte-level BPE tokenizer, and there is no tokenizer.model"
        )
    pre = pre_tokenizer(tok)
    tokens = [f"[PAD{i}]".encode() for i in range(n_vocab)]
    types = [UNUSED] * n_vocab
    for text, token_id in model["vocab"].items():
        if isinstance(token_id, int) and 0 <= token_id < n_vocab:
            tokens[token_id], types[token_id] = str(text).encode(), NORMAL
    for token_id, text, special in _added(directory):
        if 0 <= token_id < n_vocab:
            control = special or _looks_special(text)
            tokens[token_id] = text.encode()
            types[token_id] = CONTROL if control else USER_DEFINED
    return Vocab("gpt2", tokens, types, pre=pre)


def load(directory: Path, n_vocab: int, space_prefix: bool | None) -> Vocab:
    if (directory / "tokenizer.model").is_file():
        vocab = _sentencepiece(directory, n_vocab)
        if space_prefix is not None:
            vocab.space_prefix = space_prefix
        return vocab
    if (directory / "tokenizer.json").is_file():
        return _bpe(directory, n_vocab)
    raise ConvertError(f"{directory.name} has no tokenizer.model or tokenizer.json")


def write(w: gguf.GGUFWriter, vocab: Vocab, directory: Path, chat_template: str | None) -> None:
    w.add_tokenizer_model(vocab.model)
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    if vocab.scores is not None:
        w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    if vocab.space_prefix is not None:
        w.add_add_space_prefix(vocab.space_prefix)
    # gguf's SpecialVocab reads bos/eos/... ids, add_bos and merges as llama.cpp's converter does
    special = gguf.SpecialVocab(
        directory, load_merges=vocab.model == "gpt2", n_vocab=len(vocab.tokens)
    )
    if chat_template is not None:
        special.chat_template = chat_template
    if vocab.model == "gpt2" and not special.merges:
        raise ConvertError("tokenizer.json holds no merges")
    special.add_to_gguf(w, quiet=True)
