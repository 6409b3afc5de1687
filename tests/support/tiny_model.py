"""Make tiny GGUF models with random weights that llama-cpp-python loads and runs.

The vocabulary is a byte-level SentencePiece one: <unk> <s> </s> and the 256 byte tokens,
so any text tokenizes and every generated token decodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class TinySpec:
    n_embd: int = 64
    n_layer: int = 2
    n_ff: int = 128
    n_head: int = 4
    n_head_kv: int = 4
    context_length: int = 2048
    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None
    chat_template: str | None = CHATML
    name: str = "tiny-llama"
    dtype: str = "F32"  # F32, F16 or Q8_0
    seed: int = 0
    ascii_only: bool = True  # no <unk>, <s> or bytes 0x80-0xFF in the output (see _NON_ASCII)
    never_eos: bool = False  # no </s> either: generations always run to their token limit
    # one more token, a whole word (as Qwen has <tool_call>), that the model always prefers
    # wherever a grammar leaves it the choice
    favourite: str | None = None
    # more metadata, as it is (a bad value makes a file that llama.cpp aborts on)
    extra: dict[str, str | int | float] = field(default_factory=dict)


def byte_vocab() -> tuple[list[bytes], list[float], list[int]]:
    import gguf

    # "▁" (SentencePiece's space) is the one normal token, so spaces decode back to spaces.
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    tokens.append("\u2581".encode())
    scores = [0.0] * len(tokens)
    types = (
        [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
        + [gguf.TokenType.BYTE] * 256
        + [gguf.TokenType.NORMAL]
    )
    return tokens, scores, [int(t) for t in types]


# Without the bytes 0x80-0xFF a model's output is ASCII, so it streams token by token:
# llama.cpp holds back text that ends in an incomplete UTF-8 sequence, and re-decodes all of
# it for every new token, which random bytes can make last a whole generation.
_NON_ASCII = list(range(3 + 0x80, 3 + 0x100))


def _suppress(tokens: list[int], favourite: int | None = None):
    """Keep residual dimension 0 a large positive constant (no layer writes to it) and give
    `tokens` a strongly negative weight on it: their logits are then always far below (and
    the favourite's far above)."""

    def fix(name: str, data: np.ndarray) -> None:
        if name == "token_embd.weight":
            data[:, 0] = 4.0
        elif name == "output_norm.weight":
            data[0] = 1.0
        elif name == "output.weight":
            data[:, 0] = 0.0
            data[tokens, :] = 0.0
            data[tokens, 0] = -1000.0
            if favourite is not None:
                data[favourite, :] = 0.0
                data[favourite, 0] = 1000.0
        elif name.endswith(("attn_output.weight", "ffn_down.weight")):
            data[0, :] = 0.0

    return fix


def _tensor(
    rng, writer, name: str, shape: tuple[int, ...], dtype: str, scale: float = 0.2, fix=None
) -> None:
    import gguf

    data = (rng.standard_normal(shape) * scale).astype(np.float32)
    if fix is not None:
        fix(name, data)
    if name.endswith("norm.weight") or dtype == "F32" or len(shape) == 1:
        writer.add_tensor(name, data)
    elif dtype == "F16":
        writer.add_tensor(name, data.astype(np.float16))
    elif dtype == "Q8_0":
        q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        raise ValueError(f"unsupported dtype {dtype}")


FILE_TYPES = {"F32": 0, "F16": 1, "Q8_0": 7}


def make_tiny_gguf(path: Path | str, spec: TinySpec | None = None, **overrides) -> Path:
    """Write a tiny llama-architecture GGUF to `path` and return the path."""
    import gguf

    spec = spec or TinySpec()
    for key, value in overrides.items():
        setattr(spec, key, value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    tokens, scores, types = byte_vocab()
    favourite = None
    if spec.favourite:
        favourite = len(tokens)
        tokens.append(spec.favourite.encode())
        scores.append(0.0)
        types.append(int(gguf.TokenType.USER_DEFINED))
    arch = "llama"
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(spec.name)
    w.add_file_type(FILE_TYPES[spec.dtype])
    if spec.license:
        w.add_license(spec.license)
    if spec.license_name:
        w.add_string("general.license.name", spec.license_name)
    if spec.license_link:
        w.add_string("general.license.link", spec.license_link)
    w.add_context_length(spec.context_length)
    w.add_embedding_length(spec.n_embd)
    w.add_block_count(spec.n_layer)
    w.add_feed_forward_length(spec.n_ff)
    w.add_head_count(spec.n_head)
    w.add_head_count_kv(spec.n_head_kv)
    w.add_rope_dimension_count(spec.n_embd // spec.n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if spec.chat_template:
        w.add_chat_template(spec.chat_template)
    for key, value in spec.extra.items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_float32(key, value)

    n_vocab, d, ff = len(tokens), spec.n_embd, spec.n_ff
    kv = d // spec.n_head * spec.n_head_kv
    suppressed = ([0, 1, *_NON_ASCII] if spec.ascii_only or spec.never_eos else []) + (
        [2] if spec.never_eos else []
    )
    fix = _suppress(suppressed, favourite) if suppressed or favourite else None
    _tensor(rng, w, "token_embd.weight", (n_vocab, d), spec.dtype, fix=fix)
    _tensor(rng, w, "output_norm.weight", (d,), "F32", fix=fix)
    _tensor(rng, w, "output.weight", (n_vocab, d), spec.dtype, fix=fix)
    for i in range(spec.n_layer):
        p = f"blk.{i}."
        _tensor(rng, w, p + "attn_norm.weight", (d,), "F32")
        _tensor(rng, w, p + "attn_q.weight", (d, d), spec.dtype)
        _tensor(rng, w, p + "attn_k.weight", (kv, d), spec.dtype)
        _tensor(rng, w, p + "attn_v.weight", (kv, d), spec.dtype)
        _tensor(rng, w, p + "attn_output.weight", (d, d), spec.dtype, fix=fix)
        _tensor(rng, w, p + "ffn_norm.weight", (d,), "F32")
        _tensor(rng, w, p + "ffn_gate.weight", (ff, d), spec.dtype)
        _tensor(rng, w, p + "ffn_up.weight", (ff, d), spec.dtype)
        _tensor(rng, w, p + "ffn_down.weight", (d, ff), spec.dtype, fix=fix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def param_count(spec: TinySpec) -> int:
    n_vocab, d, ff = 260, spec.n_embd, spec.n_ff
    kv = d // spec.n_head * spec.n_head_kv
    per_layer = 2 * d + d * d * 2 + 2 * kv * d + 3 * ff * d
    return 2 * n_vocab * d + d + spec.n_layer * per_layer
