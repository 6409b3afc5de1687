"""A tiny LLaVA-style vision projector (mmproj GGUF, CLIP + MLP) for the tiny text model.

Random weights; it only has to load in llama.cpp's multimodal code and turn an image into
embeddings of the text model's width, so the whole image path runs for real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_tiny_mmproj(
    path: Path | str,
    text_embd: int = 64,
    image_size: int = 28,
    patch: int = 14,
    embd: int = 32,
    ff: int = 64,
    heads: int = 2,
    seed: int = 0,
) -> Path:
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def t(*shape, scale=0.05):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "clip")
    w.add_string("general.name", "tiny-mmproj")
    w.add_uint32("general.file_type", 0)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_llava_projector", True)
    w.add_string("clip.projector_type", "mlp")
    w.add_bool("clip.use_gelu", True)
    w.add_uint32("clip.vision.image_size", image_size)
    w.add_uint32("clip.vision.patch_size", patch)
    w.add_uint32("clip.vision.embedding_length", embd)
    w.add_uint32("clip.vision.feed_forward_length", ff)
    w.add_uint32("clip.vision.projection_dim", text_embd)
    w.add_uint32("clip.vision.block_count", 1)
    w.add_uint32("clip.vision.attention.head_count", heads)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    n_pos = (image_size // patch) ** 2 + 1
    w.add_tensor("v.patch_embd.weight", t(embd, 3, patch, patch).astype(np.float16))
    w.add_tensor("v.class_embd", t(embd))
    w.add_tensor("v.position_embd.weight", t(n_pos, embd).astype(np.float16))
    w.add_tensor("v.pre_ln.weight", np.ones(embd, np.float32))
    w.add_tensor("v.pre_ln.bias", np.zeros(embd, np.float32))
    p = "v.blk.0."
    for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
        w.add_tensor(p + name + ".weight", t(embd, embd).astype(np.float16))
        w.add_tensor(p + name + ".bias", t(embd))
    for name in ("ln1", "ln2"):
        w.add_tensor(p + name + ".weight", np.ones(embd, np.float32))
        w.add_tensor(p + name + ".bias", np.zeros(embd, np.float32))
    w.add_tensor(p + "ffn_up.weight", t(ff, embd).astype(np.float16))
    w.add_tensor(p + "ffn_up.bias", t(ff))
    w.add_tensor(p + "ffn_down.weight", t(embd, ff).astype(np.float16))
    w.add_tensor(p + "ffn_down.bias", t(embd))
    w.add_tensor("mm.0.weight", t(text_embd, embd, scale=1.0).astype(np.float16))
    w.add_tensor("mm.0.bias", t(text_embd))
    # large enough that the image embeddings move the text model's output
    w.add_tensor("mm.2.weight", t(text_embd, text_embd, scale=1.0).astype(np.float16))
    w.add_tensor("mm.2.bias", t(text_embd))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
