"""A LoRA adapter in GGUF (as llama.cpp's convert_lora_to_gguf.py writes one) for the tiny
models of tiny_model.py: low-rank pairs on every layer's q and v projections."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.support.tiny_model import TinySpec


def make_tiny_lora(
    path: Path, spec: TinySpec | None = None, rank: int = 4, zero: bool = False, seed: int = 3
) -> Path:
    """`zero`: B is all zeros, so the adapter changes nothing (a control)."""
    import gguf

    spec = spec or TinySpec()
    rng = np.random.default_rng(seed)
    d = spec.n_embd
    kv = d // spec.n_head * spec.n_head_kv
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(rank))
    for i in range(spec.n_layer):
        for name, n_out in (("attn_q", d), ("attn_v", kv)):
            a = (rng.standard_normal((rank, d)) * 0.5).astype(np.float32)  # ne = [d, rank]
            b = (
                np.zeros((n_out, rank), np.float32)
                if zero
                else (rng.standard_normal((n_out, rank)) * 0.5).astype(np.float32)
            )
            w.add_tensor(f"blk.{i}.{name}.weight.lora_a", a)
            w.add_tensor(f"blk.{i}.{name}.weight.lora_b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
