"""Write the GGUF: header and tensor list first (sizes are known from the safetensors
headers), then each tensor's data a slice at a time, so no tensor is ever whole in memory."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from llmlb.convert import ConvertError, archs, vocab
from llmlb.convert import checkpoint as ckpt

OUTTYPES = {
    "F32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "F16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "BF16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
}
Progress = Callable[[int, int], None]


@dataclass
class Planned:
    name: str  # in the GGUF
    source: ckpt.Tensor | None  # None: an extra tensor held in `data`
    qtype: gguf.GGMLQuantizationType
    permute_heads: int = 0  # Llama q/k: rows are rearranged within each of this many heads
    shift: float = 0.0
    data: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.shape if self.source is not None else self.data.shape  # type: ignore[union-attr]


def _plan(directory: Path, cfg: dict, arch: archs.Arch, outtype: str) -> list[Planned]:
    shape = archs.shape_of(cfg)
    names = gguf.get_tensor_name_map(arch.model_arch, shape.n_layer)
    tied = bool(
        cfg.get(
            "tie_word_embeddings",
            arch.model_arch in (archs.MA.GEMMA, archs.MA.GEMMA2, archs.MA.GEMMA3),
        )
    )
    wide = OUTTYPES[outtype][0]
    plan: list[Planned] = []
    seen: set[str] = set()
    for t in ckpt.tensors(directory).values():
        hf = archs.hf_name(t.name)
        if hf is None or (hf == "lm_head.weight" and tied):
            continue
        name = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ConvertError(f"tensor '{t.name}' is not part of a {arch.name} model")
        if name in seen:
            raise ConvertError(f"tensor '{t.name}' appears twice in the checkpoint")
        seen.add(name)
        heads = 0
        if arch.permute_qk and hf.endswith(("q_proj.weight", "q_proj.bias")):
            heads = shape.n_head
        elif arch.permute_qk and hf.endswith(("k_proj.weight", "k_proj.bias")):
            heads = shape.n_head_kv
        shift = arch.norm_shift if hf.endswith("norm.weight") else 0.0
        qtype = wide if len(t.shape) > 1 else gguf.GGMLQuantizationType.F32
        plan.append(Planned(name, t, qtype, heads, shift))
    if "token_embd.weight" not in seen:
        raise ConvertError("the checkpoint has no token embeddings (model.embed_tokens.weight)")
    for name, data in archs.extra_tensors(arch, cfg).items():
        plan.append(Planned(name, None, gguf.GGMLQuantizationType.F32, data=data))
    return plan


def _nbytes(p: Planned) -> int:
    block, size = gguf.GGML_QUANT_SIZES[p.qtype]
    return int(np.prod(p.shape, dtype=np.int64)) * size // block


def _encode(rows: np.ndarray, qtype: gguf.GGMLQuantizationType) -> bytes:
    if qtype == gguf.GGMLQuantizationType.F32:
        return rows.astype("<f4", copy=False).tobytes()
    if qtype == gguf.GGMLQuantizationType.F16:
        return rows.astype("<f2").tobytes()
    return gguf.quants.quantize(rows, qtype).tobytes()


def _write_data(fout, p: Planned) -> None:
    if p.source is None:
        assert p.data is not None
        fout.write(_encode(p.data, p.qtype))
        return
    t = p.source
    head_rows = t.rows // p.permute_heads if p.permute_heads else 1
    if p.permute_heads and t.rows % p.permute_heads:
        raise ConvertError(f"tensor '{t.name}' has {t.rows} rows, not a multiple of its heads")
    for start, stop in ckpt.row_slices(t, unit=head_rows):
        rows = ckpt.read_rows(t, start, stop)
        if p.permute_heads:
            rows = archs.permute(rows, (stop - start) // head_rows)
        if p.shift:
            rows = rows + np.float32(p.shift)
        fout.write(_encode(rows, p.qtype))


def convert(
    directory: Path, out: Path, outtype: str = "F16", progress: Progress | None = None
) -> None:
    """Write `directory`'s checkpoint to `out` as a GGUF of `outtype` (F32, F16, BF16)."""
    if outtype not in OUTTYPES:
        raise ConvertError(f"output type {outtype} is not one of {', '.join(OUTTYPES)}")
    cfg = ckpt.config(directory)
    _, arch = archs.arch_of(cfg)
    plan = _plan(directory, cfg, arch, outtype)
    embd = next(p for p in plan if p.name == "token_embd.weight")
    n_vocab = embd.shape[0]
    tokenizer = vocab.load(directory, n_vocab, arch.space_prefix)
    w = gguf.GGUFWriter(str(out), arch.name)
    w.add_name(str(cfg.get("_name_or_path") or directory.name))
    w.add_file_type(int(OUTTYPES[outtype][1]))
    archs.write_params(w, arch, cfg, n_vocab)
    if (factor := archs.longrope_attn_factor(cfg)) is not None:
        w.add_rope_scaling_attn_factors(factor)
    vocab.write(w, tokenizer, directory, None)
    for p in plan:
        w.add_tensor_info(p.name, p.shape, np.dtype(np.float32), _nbytes(p), raw_dtype=p.qtype)
    w.write_header_to_file(out)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    assert w.fout is not None
    fout = w.fout[0]
    for i, p in enumerate(plan):
        w.write_padding(fout, fout.tell())
        _write_data(fout, p)
        w.write_padding(fout, _nbytes(p))
        if progress is not None:
            progress(i + 1, len(plan))
    fout.flush()
    os.fsync(fout.fileno())
    w.close()
