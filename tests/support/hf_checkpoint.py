"""Hugging Face checkpoints for conversion tests: SmolLM2's real weights turned back from its
GGUF (dequantized with the gguf package), and tiny random ones of every covered architecture.

Safetensors files are written by hand (an 8-byte header length, a JSON header, the raw
little-endian data) so that BF16 can be written without torch.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

ST_DTYPES = {"F32": "<f4", "F16": "<f2"}


def bf16_bytes(a: np.ndarray) -> bytes:
    """float32 -> bfloat16, rounded to nearest even, as torch does."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype("<u2").tobytes()


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "F16") -> None:
    header: dict = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, a in tensors.items():
        raw = bf16_bytes(a) if dtype == "BF16" else a.astype(ST_DTYPES[dtype]).tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)))
        fh.write(head)
        for raw in blobs:
            fh.write(raw)


def unpermute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's interleaved q/k rows -> Hugging Face's rotate-half order."""
    return (
        rows.reshape(n_head, rows.shape[0] // n_head // 2, 2, *rows.shape[1:])
        .swapaxes(1, 2)
        .reshape(rows.shape)
    )


HF_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _field(reader, key: str):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def _tokenizer_files(reader, directory: Path) -> None:
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    merges = _field(reader, "tokenizer.ggml.merges")
    control = [i for i, t in enumerate(types) if t == 3]
    added = [
        {
            "id": i,
            "content": tokens[i],
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i in control
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {**byte_level, "use_regex": True},
            ],
        },
        "post_processor": {**byte_level, "use_regex": True},
        "decoder": {**byte_level, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": list(merges),
        },
    }
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(a["id"]): a for a in added},
        "bos_token": tokens[_field(reader, "tokenizer.ggml.bos_token_id")],
        "eos_token": tokens[_field(reader, "tokenizer.ggml.eos_token_id")],
        "pad_token": tokens[_field(reader, "tokenizer.ggml.padding_token_id")],
        "unk_token": tokens[_field(reader, "tokenizer.ggml.unknown_token_id")],
        "chat_template": _field(reader, "tokenizer.chat_template"),
        "model_max_length": 8192,
        "tokenizer_class": "GPT2Tokenizer",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False))


def smollm2_checkpoint(gguf_path: Path, directory: Path, dtype: str = "F16") -> Path:
    """SmolLM2-135M-Instruct as Hugging Face publishes it (LlamaForCausalLM, tied embeddings,
    tokenizer.json, chat template), rebuilt from its Q4_1 GGUF; weights in `dtype`."""
    import gguf

    reader = gguf.GGUFReader(gguf_path)
    n_head = int(_field(reader, "llama.attention.head_count"))
    n_head_kv = int(_field(reader, "llama.attention.head_count_kv"))
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        parts = t.name.split(".")
        if parts[0] == "blk":
            kind = parts[2]
            name = f"model.layers.{parts[1]}.{HF_NAMES[kind]}.{parts[3]}"
            if kind == "attn_q":
                data = unpermute(data, n_head)
            elif kind == "attn_k":
                data = unpermute(data, n_head_kv)
        else:
            name = f"{HF_NAMES[parts[0]]}.{parts[1]}"
        tensors[name] = data
    write_safetensors(directory / "model.safetensors", tensors, dtype)
    _tokenizer_files(reader, directory)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": int(_field(reader, "llama.embedding_length")),
        "intermediate_size": int(_field(reader, "llama.feed_forward_length")),
        "max_position_embeddings": int(_field(reader, "llama.context_length")),
        "num_attention_heads": n_head,
        "num_hidden_layers": int(_field(reader, "llama.block_count")),
        "num_key_value_heads": n_head_kv,
        "rms_norm_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_field(reader, "llama.rope.freq_base")),
        "rope_scaling": None,
        "tie_word_embeddings": True,
        "torch_dtype": {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}[dtype],
        "vocab_size": len(_field(reader, "tokenizer.ggml.tokens")),
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2})
    )
    return directory
