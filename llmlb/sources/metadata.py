"""Read what a model file says about itself (GGUF, safetensors), without reading tensor data."""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlb.errors import BadRequest
from llmlb.sources.gguf_header import GGUFHeader, HeaderError, read_header
from llmlb.validation import Format

GGUF_MAGIC = b"GGUF"
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


class BadModelFile(BadRequest):
    """The file is not what its name claims (truncated, wrong magic, bad header)."""


@dataclass
class ModelMeta:
    format: str
    architecture: str = ""
    parameters: int | None = None
    quantization: str | None = None
    context_length: int | None = None
    license: str | None = None
    chat_template: str | None = None
    is_projector: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def format_params(n: int | None) -> str:
    """`3.21B`, `494.03M`, `125.00K` as ollama shows parameter sizes."""
    if not n:
        return "-"
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _quant_name(file_type: int | None, tensor_types: Counter) -> str | None:
    import gguf

    if file_type is not None:
        try:
            return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    if tensor_types:
        return tensor_types.most_common(1)[0][0]
    return None


def _tensor_bytes(type_id: int, n_elements: int) -> int | None:
    import gguf

    try:
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(type_id)]
    except (ValueError, KeyError):
        return None  # a type this gguf package does not know: skip the bounds check
    return n_elements * type_size // block


def _type_name(type_id: int) -> str:
    import gguf

    try:
        return gguf.GGMLQuantizationType(type_id).name
    except ValueError:
        return f"TYPE_{type_id}"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def gguf_header(path: Path | str, shown: str | None = None) -> GGUFHeader:
    """A GGUF's header (keys and tensor list), or BadModelFile naming the file as `shown`."""
    path = Path(path)
    shown = shown or path.name
    size = path.stat().st_size
    with open(path, "rb", buffering=1 << 20) as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise BadModelFile(f"{shown} is not a GGUF file (wrong magic bytes)")
        try:
            return read_header(fh, size)
        except HeaderError as exc:
            raise BadModelFile(f"{shown} is not a valid GGUF file: {exc}") from exc


def read_gguf(path: Path | str) -> ModelMeta:
    """The model's description from its header alone (see gguf_header.py for why not GGUFReader)."""
    path = Path(path)
    size = path.stat().st_size
    header = gguf_header(path)
    values = header.values
    arch = _text(values.get("general.architecture")) or ""
    params = 0
    types: Counter = Counter()
    for t in header.tensors:
        n = t.n_elements
        params += n
        if len(t.shape) > 1:
            types[_type_name(t.type)] += n
        n_bytes = _tensor_bytes(t.type, n)
        if n_bytes is not None and header.data_offset + t.offset + n_bytes > size:
            raise BadModelFile(
                f"{path.name} is truncated: tensor {t.name} runs past the end of the file"
            )
    license_ = _text(values.get("general.license"))
    license_name = _text(values.get("general.license.name"))
    license_link = _text(values.get("general.license.link"))
    license_text = " ".join(x for x in (license_name or license_, license_link) if x) or None
    if license_name and license_ and license_name != license_:
        license_text = f"{license_name} ({license_})" + (f" {license_link}" if license_link else "")
    ctx = values.get(f"{arch}.context_length") if arch else None
    file_type = values.get("general.file_type")
    return ModelMeta(
        format="GGUF",
        architecture=arch,
        parameters=params or None,
        quantization=_quant_name(file_type if isinstance(file_type, int) else None, types),
        context_length=int(ctx) if isinstance(ctx, int) else None,
        license=license_text,
        chat_template=_text(values.get("tokenizer.chat_template")),
        is_projector=arch == "clip" or values.get("general.type") == "mmproj",
        extra={
            "name": _text(values.get("general.name")),
            "file_type": file_type,
            # set by embedding models (encoders, Qwen3-Embedding...): how tokens are pooled
            "pooling_type": values.get(f"{arch}.pooling_type") if arch else None,
        },
    )


def gguf_info(path: Path) -> dict[str, Any]:
    """A GGUF's metadata as ollama's /api/show `model_info` gives it: every key, long arrays
    (the vocabulary) as null. Reads the header only."""
    with open(path, "rb", buffering=1 << 20) as fh:
        header = read_header(fh, path.stat().st_size)
    info: dict[str, Any] = {
        k: v for k, v in header.values.items() if k != "tokenizer.chat_template"
    }
    info.update(dict.fromkeys(header.arrays))
    return info


def _safetensors_header(path: Path) -> dict:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise BadModelFile(f"{path.name} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n == 0 or n > MAX_SAFETENSORS_HEADER or 8 + n > size:
            raise BadModelFile(f"{path.name} is not a safetensors file (bad header length)")
        try:
            header = json.loads(fh.read(n))
        except ValueError as exc:
            raise BadModelFile(
                f"{path.name} is not a safetensors file (header is not JSON)"
            ) from exc
    if not isinstance(header, dict):
        raise BadModelFile(f"{path.name} is not a safetensors file (header is not an object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not offsets or len(offsets) != 2:
            raise BadModelFile(f"{path.name}: tensor {name} has no data offsets")
        end = max(end, int(offsets[1]))
    if 8 + n + end > size:
        raise BadModelFile(f"{path.name} is truncated: tensors run past the end of the file")
    return header


def _shards(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as exc:
            raise BadModelFile(f"{index.name} is not a valid safetensors index") from exc
        missing = [n for n in names if not (directory / n).exists()]
        if missing:
            raise BadModelFile(f"safetensors shard missing: {missing[0]}")
        return [directory / n for n in names]
    return sorted(directory.glob("*.safetensors"))


def _license_from_card(directory: Path) -> str | None:
    card = directory / "README.md"
    if not card.exists():
        return None
    text = card.read_text(errors="replace")
    if not text.startswith("---"):
        return None
    for line in text.split("---", 2)[1].splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("license_name", "license") and value.strip():
            return value.strip().strip("'\"")
    return None


def read_safetensors(path: Path | str) -> ModelMeta:
    """`path` is the model directory (or one .safetensors file inside it)."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    shards = _shards(directory) if path.is_dir() else [path]
    if not shards:
        raise BadModelFile(f"no .safetensors files in {directory.name}")
    params = 0
    dtypes: Counter = Counter()
    for shard in shards:
        for name, info in _safetensors_header(shard).items():
            if name == "__metadata__":
                continue
            n = 1
            for d in info.get("shape", []):
                n *= int(d)
            params += n
            dtypes[str(info.get("dtype", "?"))] += n
    config: dict = {}
    cfg = directory / "config.json"
    if cfg.exists():
        try:
            config = json.loads(cfg.read_text())
        except ValueError as exc:
            raise BadModelFile("config.json is not valid JSON") from exc
    arch = config.get("model_type") or (config.get("architectures") or [""])[0]
    ctx = (
        config.get("max_position_embeddings")
        or config.get("n_positions")
        or config.get("seq_length")
    )
    template = None
    tok_cfg = directory / "tokenizer_config.json"
    if tok_cfg.exists():
        try:
            template = json.loads(tok_cfg.read_text()).get("chat_template")
        except ValueError:
            template = None
    if not isinstance(template, str):
        template = None
    return ModelMeta(
        format=Format.SAFETENSORS,
        architecture=str(arch or ""),
        parameters=params or None,
        quantization=dtypes.most_common(1)[0][0] if dtypes else None,
        context_length=int(ctx) if ctx else None,
        license=_license_from_card(directory),
        chat_template=template,
        extra={"shards": [s.name for s in shards]},
    )


def read_metadata(path: Path | str, format: str | None = None) -> ModelMeta:
    path = Path(path)
    if format == Format.SAFETENSORS or path.is_dir() or path.suffix == ".safetensors":
        return read_safetensors(path)
    return read_gguf(path)
