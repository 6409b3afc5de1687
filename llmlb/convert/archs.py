"""The architectures llmlb converts: what each writes into the GGUF header, and the few
tensor transforms that separate Hugging Face's layout from llama.cpp's.

Names go through gguf.TensorNameMap, the map llama.cpp's converter uses. Transforms, as in
llama.cpp's conversion/ modules: Llama's q and k are stored for rotate-half RoPE and
llama.cpp wants them interleaved (`permute`); Gemma's RMSNorm multiplies by (1 + w), so
+1 goes into every norm weight; Llama 3's RoPE scaling and Phi-3's LongRoPE become small
extra tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gguf
import numpy as np

from llmlb.convert import ConvertError

MA = gguf.MODEL_ARCH


@dataclass(frozen=True)
class Arch:
    model_arch: gguf.MODEL_ARCH
    family: str  # how the README and errors name it
    permute_qk: bool = False  # Llama: rotate-half q/k rows -> llama.cpp's interleaved pairs
    norm_shift: float = 0.0  # Gemma: x * (1 + w)
    space_prefix: bool | None = None  # SentencePiece's dummy prefix, where llama.cpp fixes it

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.model_arch]


_LLAMA = Arch(MA.LLAMA, "Llama 2/3, SmolLM2, Mistral", permute_qk=True)
_GEMMA3 = Arch(MA.GEMMA3, "Gemma 3", norm_shift=1.0, space_prefix=False)
ARCHS: dict[str, Arch] = {
    "LlamaForCausalLM": _LLAMA,
    "MistralForCausalLM": _LLAMA,
    "Qwen2ForCausalLM": Arch(MA.QWEN2, "Qwen2, Qwen2.5"),
    "Qwen3ForCausalLM": Arch(MA.QWEN3, "Qwen3"),
    "GemmaForCausalLM": Arch(MA.GEMMA, "Gemma", norm_shift=1.0, space_prefix=False),
    "Gemma2ForCausalLM": Arch(MA.GEMMA2, "Gemma 2", norm_shift=1.0, space_prefix=False),
    "Gemma3ForCausalLM": _GEMMA3,
    "Gemma3ForConditionalGeneration": _GEMMA3,  # its language model; the vision tower is left out
    "Phi3ForCausalLM": Arch(MA.PHI3, "Phi-3"),
}


def covered() -> str:
    return ", ".join(ARCHS)


def arch_of(cfg: dict[str, Any]) -> tuple[str, Arch]:
    names = cfg.get("architectures") or []
    name = str(names[0]) if isinstance(names, list) and names else str(cfg.get("model_type", ""))
    if name not in ARCHS:
        raise ConvertError(
            f"architecture '{name or 'unknown'}' cannot be converted to GGUF by llmlb; "
            f"covered: {covered()}"
        )
    return name, ARCHS[name]


def _int(cfg: dict[str, Any], *keys: str, default: int | None = None) -> int:
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    if default is None:
        raise ConvertError(f"config.json has no usable '{keys[0]}'")
    return default


def _num(cfg: dict[str, Any], key: str, default: float | None = None) -> float | None:
    v = cfg.get(key, default)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def rope(cfg: dict[str, Any]) -> dict[str, Any]:
    r = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    if not isinstance(r, dict):
        return {}
    r = dict(r)
    if "rope_type" not in r and "type" in r:
        r["rope_type"] = r["type"]
    return r


@dataclass
class Shape:
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int


def shape_of(cfg: dict[str, Any]) -> Shape:
    n_embd = _int(cfg, "hidden_size")
    n_head = _int(cfg, "num_attention_heads")
    return Shape(
        n_layer=_int(cfg, "num_hidden_layers"),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=_int(cfg, "num_key_value_heads", default=n_head),
        head_dim=_int(cfg, "head_dim", default=n_embd // n_head),
    )


def write_params(w: gguf.GGUFWriter, arch: Arch, cfg: dict[str, Any], n_vocab: int) -> None:
    """The architecture's header keys, as llama.cpp's converter writes them."""
    s = shape_of(cfg)
    default_ctx = 131072 if arch.model_arch == MA.GEMMA3 else 4096
    w.add_context_length(_int(cfg, "max_position_embeddings", "n_positions", default=default_ctx))
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(_int(cfg, "intermediate_size"))
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_layer_norm_rms_eps(_num(cfg, "rms_norm_eps", 1e-6) or 1e-6)
    if "head_dim" in cfg or arch.model_arch in (MA.GEMMA, MA.GEMMA2, MA.GEMMA3, MA.QWEN3):
        w.add_key_length(s.head_dim)
        w.add_value_length(s.head_dim)
    r = rope(cfg)
    theta = _num(cfg, "rope_theta") or _num(r, "rope_theta")
    if theta is None and arch.model_arch == MA.GEMMA3:
        theta = 1_000_000.0
    if theta is not None:
        w.add_rope_freq_base(theta)
    kind = str(r.get("rope_type", "")).lower()
    if kind == "linear" and r.get("factor"):
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(r["factor"]))
    elif kind == "yarn" and r.get("factor"):
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(r["factor"]))
        w.add_rope_scaling_orig_ctx_len(int(r.get("original_max_position_embeddings", 0)))
    elif kind in ("longrope", "su"):
        w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
    elif kind not in ("", "default", "llama3"):
        raise ConvertError(f"RoPE scaling '{kind}' in config.json is not supported")
    if arch.model_arch == MA.LLAMA:
        w.add_vocab_size(n_vocab)
        w.add_rope_dimension_count(s.head_dim)
    elif arch.model_arch == MA.GEMMA2:
        w.add_attn_logit_softcapping(_num(cfg, "attn_logit_softcapping", 50.0) or 50.0)
        w.add_final_logit_softcapping(_num(cfg, "final_logit_softcapping", 30.0) or 30.0)
        w.add_sliding_window(_int(cfg, "sliding_window", default=4096))
    elif arch.model_arch == MA.GEMMA3:
        _gemma3(w, cfg, s)
    elif arch.model_arch == MA.PHI3:
        n_ctx = _int(cfg, "max_position_embeddings", "n_positions", default=4096)
        w.add_rope_scaling_orig_ctx_len(
            _int(cfg, "original_max_position_embeddings", default=n_ctx)
        )
        factor = _num(cfg, "partial_rotary_factor", 1.0) or 1.0
        w.add_rope_dimension_count(int(factor * s.n_embd) // s.n_head)
        w.add_sliding_window(
            _int(cfg, "sliding_window", default=0) if cfg.get("sliding_window") else 0
        )


def _gemma3(w: gguf.GGUFWriter, cfg: dict[str, Any], s: Shape) -> None:
    if cfg.get("attn_logit_softcapping"):
        raise ConvertError("Gemma 3 has no attention softcapping; config.json sets one")
    if cap := _num(cfg, "final_logit_softcapping"):
        w.add_final_logit_softcapping(cap)
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == s.n_layer:
        w.add_sliding_window(_int(cfg, "sliding_window", default=4096))
        w.add_sliding_window_pattern([t == "sliding_attention" for t in types])
    elif cfg.get("sliding_window_pattern", 6) != 1:
        w.add_sliding_window(_int(cfg, "sliding_window", default=4096))
        w.add_sliding_window_pattern(int(cfg.get("sliding_window_pattern", 6)))
    local = _num(cfg, "rope_local_base_freq", 10000.0)
    w.add_rope_freq_base_swa(local or 10000.0)


def extra_tensors(arch: Arch, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """Tensors llama.cpp wants that the checkpoint does not hold (RoPE factors)."""
    r, s = rope(cfg), shape_of(cfg)
    kind = str(r.get("rope_type", "")).lower()
    out: dict[str, np.ndarray] = {}
    if kind == "llama3":
        base = _num(cfg, "rope_theta") or _num(r, "rope_theta") or 10000.0
        freqs = 1.0 / (base ** (np.arange(0, s.head_dim, 2, dtype=np.float32) / s.head_dim))
        factor = float(r.get("factor", 8.0))
        low, high = float(r.get("low_freq_factor", 1.0)), float(r.get("high_freq_factor", 4.0))
        old = float(r.get("original_max_position_embeddings", 8192))
        factors = []
        for f in freqs:
            wavelen = 2 * math.pi / f
            if wavelen < old / high:
                factors.append(1.0)
            elif wavelen > old / low:
                factors.append(factor)
            else:
                smooth = (old / wavelen - low) / (high - low)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        out["rope_freqs.weight"] = np.array(factors, dtype=np.float32)
    elif kind in ("longrope", "su") and arch.model_arch == MA.PHI3:
        long, short = r.get("long_factor"), r.get("short_factor")
        if not isinstance(long, list) or not isinstance(short, list) or len(long) != len(short):
            raise ConvertError("config.json's LongRoPE needs long_factor and short_factor lists")
        out["rope_factors_long.weight"] = np.array(long, dtype=np.float32)
        out["rope_factors_short.weight"] = np.array(short, dtype=np.float32)
    return out


def longrope_attn_factor(cfg: dict[str, Any]) -> float | None:
    r = rope(cfg)
    if str(r.get("rope_type", "")).lower() not in ("longrope", "su"):
        return None
    n_ctx = _int(cfg, "max_position_embeddings", default=4096)
    orig = _int(cfg, "original_max_position_embeddings", default=n_ctx)
    scale = n_ctx / orig
    return math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0


def permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Rotate-half q/k rows of `n_head` whole heads -> interleaved pairs (llama.cpp's RoPE)."""
    return (
        rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:])
        .swapaxes(1, 2)
        .reshape(rows.shape)
    )


SKIPPED = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")
VISION = ("vision_tower.", "multi_modal_projector.", "vision_model.", "model.vision_tower.")


def hf_name(name: str) -> str | None:
    """The language model's own name of a checkpoint tensor, or None to leave it out."""
    if name.endswith(SKIPPED) or name.startswith(VISION):
        return None
    for prefix, repl in (("model.language_model.", "model."), ("language_model.", "")):
        if name.startswith(prefix):
            return repl + name[len(prefix) :]
    return name
