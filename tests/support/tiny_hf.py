"""Tiny random Hugging Face checkpoints of every architecture llmlb converts, and what
Hugging Face's modeling code computes for them, written out in numpy.

The reference follows transformers' modeling_{llama,qwen2,qwen3,gemma,gemma2,gemma3,phi3}.py:
rotate-half RoPE (Llama 3's scaled frequencies), grouped-query attention, RMSNorm with
Gemma's (1 + w), Gemma's embedding scale, GELU-tanh and soft-capping, Qwen's q/k/v biases,
Qwen3's and Gemma 3's q/k norms, Gemma 3's local RoPE base on its sliding layers, Phi-3's fused
qkv and gate_up. A converted GGUF that llama.cpp computes the same logits from is converted
right: a wrong permutation, a missing norm offset or a misnamed tensor changes them wholesale.
Sequences are shorter than any sliding window, so windows themselves are not exercised.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from tests.support.hf_checkpoint import write_safetensors

H, KV, D, HIDDEN, FF, LAYERS = 4, 2, 16, 64, 96, 2

ARCHS = {
    "llama": ("LlamaForCausalLM", {"tie_word_embeddings": True}),
    "llama3": (
        "LlamaForCausalLM",
        {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            }
        },
    ),
    "mistral": ("MistralForCausalLM", {"sliding_window": None}),
    "qwen2": ("Qwen2ForCausalLM", {"tie_word_embeddings": False}),
    "qwen3": ("Qwen3ForCausalLM", {"head_dim": D}),
    "gemma": ("GemmaForCausalLM", {"head_dim": D, "hidden_activation": "gelu_pytorch_tanh"}),
    "gemma2": (
        "Gemma2ForCausalLM",
        {
            "head_dim": D,
            "query_pre_attn_scalar": D,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
            "sliding_window": 4096,
        },
    ),
    "gemma3": (
        "Gemma3ForCausalLM",
        {
            "head_dim": D,
            "query_pre_attn_scalar": D,
            "sliding_window": 512,
            "sliding_window_pattern": 2,
            "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0,
        },
    ),
    "phi3": ("Phi3ForCausalLM", {"sliding_window": None}),
}


# -- tokenizer.model -------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def sentencepiece_model(pieces: list[tuple[str, float, int]], dummy_prefix: bool = True) -> bytes:
    """A SentencePiece ModelProto (BPE) with these (piece, score, type) entries."""
    out = b""
    for text, score, kind in pieces:
        raw = text.encode()
        body = (
            _field(1, raw)
            + _varint(2 << 3 | 5)
            + struct.pack("<f", score)
            + _varint(3 << 3)
            + _varint(kind)
        )
        out += _field(1, body)
    out += _field(2, _varint(3 << 3) + _varint(2))  # trainer_spec.model_type = BPE
    out += _field(3, _varint(3 << 3) + _varint(int(dummy_prefix)))  # normalizer add_dummy_prefix
    return out


def byte_pieces(words: tuple[str, ...] = ()) -> list[tuple[str, float, int]]:
    """<unk> <s> </s>, the 256 byte pieces, ▁, <|endoftext|> (llama.cpp looks it up in a
    Phi-3), then `words` (best-scored first)."""
    pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
    pieces += [(f"<0x{i:02X}>", 0.0, 6) for i in range(256)]
    pieces += [("\u2581", -1.0, 1), ("<|endoftext|>", 0.0, 3)]
    pieces += [(w, -2.0 - i, 1) for i, w in enumerate(words)]
    return pieces


# -- checkpoints -----------------------------------------------------------------------------


def config(kind: str) -> dict:
    arch, extra = ARCHS[kind]
    cfg = {
        "architectures": [arch],
        "hidden_size": HIDDEN,
        "intermediate_size": FF,
        "num_attention_heads": H,
        "num_key_value_heads": KV,
        "num_hidden_layers": LAYERS,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "vocab_size": 261,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": kind.startswith("gemma"),
        "torch_dtype": "float32",
    }
    cfg.update(extra)
    return cfg


def tensors(kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    cfg = config(kind)
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.25) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def norm() -> np.ndarray:  # Gemma stores w for (1 + w)
        base = 0.0 if kind.startswith("gemma") else 1.0
        return (base + rng.standard_normal(HIDDEN) * 0.1).astype(np.float32)

    n_vocab = cfg["vocab_size"]
    out = {"model.embed_tokens.weight": w(n_vocab, HIDDEN, scale=1.0), "model.norm.weight": norm()}
    if not cfg["tie_word_embeddings"]:
        out["lm_head.weight"] = w(n_vocab, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = norm()
        out[p + "post_attention_layernorm.weight"] = norm()
        if kind == "phi3":
            out[p + "self_attn.qkv_proj.weight"] = w((H + 2 * KV) * D, HIDDEN)
            out[p + "mlp.gate_up_proj.weight"] = w(2 * FF, HIDDEN)
        else:
            out[p + "self_attn.q_proj.weight"] = w(H * D, HIDDEN)
            out[p + "self_attn.k_proj.weight"] = w(KV * D, HIDDEN)
            out[p + "self_attn.v_proj.weight"] = w(KV * D, HIDDEN)
            out[p + "mlp.gate_proj.weight"] = w(FF, HIDDEN)
            out[p + "mlp.up_proj.weight"] = w(FF, HIDDEN)
        out[p + "self_attn.o_proj.weight"] = w(HIDDEN, H * D)
        out[p + "mlp.down_proj.weight"] = w(HIDDEN, FF)
        if kind == "qwen2":
            for x, n in (("q", H), ("k", KV), ("v", KV)):
                out[p + f"self_attn.{x}_proj.bias"] = w(n * D, scale=0.5)
        if kind in ("qwen3", "gemma3"):
            base = 0.0 if kind == "gemma3" else 1.0
            for x in ("q", "k"):
                out[p + f"self_attn.{x}_norm.weight"] = (
                    base + rng.standard_normal(D) * 0.1
                ).astype(np.float32)
        if kind in ("gemma2", "gemma3"):
            out[p + "pre_feedforward_layernorm.weight"] = norm()
            out[p + "post_feedforward_layernorm.weight"] = norm()
    return out


def make_checkpoint(directory: Path, kind: str, dtype: str = "F32", seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / "model.safetensors", tensors(kind, seed), dtype)
    (directory / "config.json").write_text(json.dumps(config(kind)))
    (directory / "tokenizer.model").write_bytes(sentencepiece_model(byte_pieces()))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True})
    )
    return directory


# -- the reference forward pass ----------------------------------------------------------------


def _rms(x: np.ndarray, w: np.ndarray, gemma: bool, eps: float = 1e-6) -> np.ndarray:
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * ((1.0 + w) if gemma else w)


def _inv_freq(cfg: dict, theta: float) -> np.ndarray:
    inv = 1.0 / theta ** (np.arange(0, D, 2, dtype=np.float64) / D)
    r = cfg.get("rope_scaling") or {}
    if r.get("rope_type") == "llama3":  # transformers' _compute_llama3_parameters
        factor, low, high = r["factor"], r["low_freq_factor"], r["high_freq_factor"]
        old = r["original_max_position_embeddings"]
        wavelen = 2 * np.pi / inv
        scaled = np.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) & ~(wavelen > old / low)
        inv = np.where(medium, smoothed, scaled)
    return inv


def _rope(x: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """x: [T, heads, D], rotate-half."""
    ang = np.arange(x.shape[0])[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, axis=-1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, axis=-1)[:, None, :]
    half = D // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


def reference_logits(kind: str, t: dict[str, np.ndarray], tokens: list[int]) -> np.ndarray:
    cfg = config(kind)
    gemma = kind.startswith("gemma")
    g = {k: v.astype(np.float64) for k, v in t.items()}
    x = g["model.embed_tokens.weight"][tokens]
    if gemma:
        x = x * np.sqrt(HIDDEN)
    T = len(tokens)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        h = _rms(x, g[p + "input_layernorm.weight"], gemma)
        if kind == "phi3":
            qkv = h @ g[p + "self_attn.qkv_proj.weight"].T
            q, k, v = np.split(qkv, [H * D, (H + KV) * D], axis=-1)
        else:
            q, k, v = (h @ g[p + f"self_attn.{n}_proj.weight"].T for n in "qkv")
            if kind == "qwen2":
                q, k, v = (
                    a + g[p + f"self_attn.{n}_proj.bias"]
                    for a, n in zip((q, k, v), "qkv", strict=True)
                )
        q, k, v = q.reshape(T, H, D), k.reshape(T, KV, D), v.reshape(T, KV, D)
        if kind in ("qwen3", "gemma3"):
            q = _rms(q, g[p + "self_attn.q_norm.weight"], kind == "gemma3")
            k = _rms(k, g[p + "self_attn.k_norm.weight"], kind == "gemma3")
        theta = cfg["rope_theta"]
        if kind == "gemma3" and (i + 1) % cfg["sliding_window_pattern"]:
            theta = cfg["rope_local_base_freq"]
        inv = _inv_freq(cfg, theta)
        q, k = _rope(q, inv), _rope(k, inv)
        scale = cfg.get("query_pre_attn_scalar", D) ** -0.5
        out = np.zeros((T, H, D))
        for head in range(H):
            kvh = head // (H // KV)
            s = (q[:, head] @ k[:, kvh].T) * scale
            if cfg.get("attn_logit_softcapping"):
                cap = cfg["attn_logit_softcapping"]
                s = np.tanh(s / cap) * cap
            s = s + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            out[:, head] = (s / s.sum(axis=-1, keepdims=True)) @ v[:, kvh]
        o = out.reshape(T, H * D) @ g[p + "self_attn.o_proj.weight"].T
        if kind in ("gemma2", "gemma3"):
            o = _rms(o, g[p + "post_attention_layernorm.weight"], True)
            h = _rms(x + o, g[p + "pre_feedforward_layernorm.weight"], True)
        else:
            h = _rms(x + o, g[p + "post_attention_layernorm.weight"], gemma)
        x = x + o
        if kind == "phi3":
            gate, up = np.split(h @ g[p + "mlp.gate_up_proj.weight"].T, 2, axis=-1)
        else:
            gate, up = h @ g[p + "mlp.gate_proj.weight"].T, h @ g[p + "mlp.up_proj.weight"].T
        m = ((_gelu_tanh(gate) if gemma else _silu(gate)) * up) @ g[p + "mlp.down_proj.weight"].T
        if kind in ("gemma2", "gemma3"):
            m = _rms(m, g[p + "post_feedforward_layernorm.weight"], True)
        x = x + m
    x = _rms(x, g["model.norm.weight"], gemma)
    head_w = g.get("lm_head.weight", g["model.embed_tokens.weight"])
    logits = x @ head_w.T
    if cfg.get("final_logit_softcapping"):
        cap = cfg["final_logit_softcapping"]
        logits = np.tanh(logits / cap) * cap
    return logits
