"""What a loaded model costs in memory, known before loading it, and what is free.

A chat model holds its weights plus a KV cache for LLMLB_NUM_PARALLEL sequences of
LLMLB_CONTEXT_LENGTH tokens each (f16 keys and values, as llama.cpp stores them by default).
The scheduler compares that with free memory before a load, so that a setting that cannot
fit is refused with a clear message instead of failing deep inside llama.cpp.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from llmlb.engine.gpu import GpuInfo
from llmlb.sources.gguf_header import HeaderError, read_header
from llmlb.store.models import Model
from llmlb.validation import Format

log = logging.getLogger("llmlb.engine")
KV_BYTES_PER_VALUE = 2  # f16


@dataclass(frozen=True)
class Shape:
    """The numbers of a transformer that size its KV cache."""

    layers: int
    kv_heads: list[int]  # per layer
    key_dim: int
    value_dim: int

    def kv_bytes(self, tokens: int) -> int:
        per_token = sum(self.kv_heads) * (self.key_dim + self.value_dim) * KV_BYTES_PER_VALUE
        return per_token * tokens


def shape_of(path: str | Path) -> Shape | None:
    """Read the shape from a GGUF header (no tensor data); None when it does not say."""
    try:
        with open(path, "rb") as fh:
            values = read_header(fh, os.fstat(fh.fileno()).st_size).values
    except (OSError, HeaderError) as exc:  # not ours to judge here: loading reports a bad file
        log.debug("cannot read %s: %s", path, exc)
        return None

    def number(key: str) -> int | list[int] | None:
        v = values.get(key)
        if isinstance(v, list) and v and all(isinstance(x, int) for x in v):
            return v
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    arch = values.get("general.architecture")
    if not isinstance(arch, str):
        return None
    layers, embd = number(f"{arch}.block_count"), number(f"{arch}.embedding_length")
    heads = number(f"{arch}.attention.head_count")
    kv = number(f"{arch}.attention.head_count_kv")
    if not isinstance(layers, int) or not isinstance(embd, int) or not layers or not heads:
        return None
    heads_n = max(heads) if isinstance(heads, list) else heads
    if kv is None:
        kv = heads
    kv_heads = list(kv) if isinstance(kv, list) else [kv] * layers
    head_dim = embd // heads_n if heads_n else 0
    key_dim = number(f"{arch}.attention.key_length")
    value_dim = number(f"{arch}.attention.value_length")
    return Shape(
        layers,
        kv_heads,
        key_dim if isinstance(key_dim, int) and key_dim else head_dim,
        value_dim if isinstance(value_dim, int) and value_dim else head_dim,
    )


def context_for(model: Model, n_ctx: int) -> int:
    """The context one sequence gets: the setting, capped at what the model was trained for."""
    return min(n_ctx, model.context_length) if model.context_length else n_ctx


def estimate(model: Model, n_ctx: int, n_seq: int) -> int:
    """Bytes a load of `model` takes: weights, projector, and KV cache for n_seq sequences."""
    total = int(model.size_bytes)
    if model.projector_path and Path(model.projector_path).exists():
        total += Path(model.projector_path).stat().st_size
    shape = (
        shape_of(model.path) if model.format == Format.GGUF and Path(model.path).exists() else None
    )
    if shape is not None:
        total += shape.kv_bytes(context_for(model, n_ctx) * n_seq)
    return total


def free_bytes(gpu: GpuInfo, on_gpu: bool) -> int | None:
    """Memory a new model can take: free VRAM when models go to the GPU, else the system's
    MemAvailable (which counts the page cache of memory-mapped weights as free). None when
    unknown."""
    if on_gpu:
        return gpu.vram_total_bytes - gpu.vram_used_bytes if gpu.available else None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
