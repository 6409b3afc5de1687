"""A tiny safetensors model directory: sharded weights, config.json, a model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_tiny_safetensors(
    directory: Path | str,
    shards: int = 2,
    license: str | None = "apache-2.0",
    context_length: int = 4096,
) -> tuple[Path, int]:
    """Write the model; return (directory, parameter count)."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tensors = {
        "model.embed_tokens.weight": rng.standard_normal((100, 16)).astype(np.float16),
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((32, 16)).astype(np.float16),
        "model.layers.0.mlp.down_proj.weight": rng.standard_normal((16, 32)).astype(np.float16),
        "model.norm.weight": rng.standard_normal((16,)).astype(np.float16),
    }
    names = sorted(tensors)
    weight_map = {}
    if shards == 1:
        save_file(tensors, str(directory / "model.safetensors"))
    else:
        for i in range(shards):
            part = {n: tensors[n] for n in names[i::shards]}
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_file(part, str(directory / fname))
            weight_map.update({n: fname for n in part})
        (directory / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map})
        )
    (directory / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["Qwen2ForCausalLM"],
                "model_type": "qwen2",
                "max_position_embeddings": context_length,
                "torch_dtype": "float16",
            }
        )
    )
    if license:
        (directory / "README.md").write_text(f"---\nlicense: {license}\n---\n# Tiny\n")
    return directory, sum(int(np.prod(t.shape)) for t in tensors.values())
