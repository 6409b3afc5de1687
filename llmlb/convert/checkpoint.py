"""A Hugging Face checkpoint directory: config.json and the tensors of its safetensors shards,
read a slice at a time.

Slices are read with positioned reads into fresh buffers rather than through a memory map:
the bytes of a mapped file count in the process's resident size once touched, so a mapped
read of a 16 GB checkpoint would look (and, under memory pressure, act) like 16 GB in use.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmlb.convert import ConvertError

MAX_HEADER = 100 * 1024 * 1024
SLICE_BYTES = 4 * 1024 * 1024  # input bytes per slice
DTYPES: dict[str, tuple[np.dtype | None, int]] = {
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (None, 2),
}


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # F32, F16, BF16
    shape: tuple[int, ...]
    path: Path
    offset: int  # of its first byte in the file

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_size(self) -> int:
        """Elements in one row (the first dimension's step)."""
        return int(np.prod(self.shape[1:], dtype=np.int64)) if len(self.shape) > 1 else 1

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_size * DTYPES[self.dtype][1]


def _header(path: Path) -> tuple[dict[str, Any], int]:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ConvertError(f"{path.name} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n == 0 or n > MAX_HEADER or 8 + n > size:
            raise ConvertError(f"{path.name} is not a safetensors file (bad header length)")
        try:
            header = json.loads(fh.read(n))
        except ValueError as exc:
            raise ConvertError(
                f"{path.name} is not a safetensors file (header is not JSON)"
            ) from exc
    if not isinstance(header, dict):
        raise ConvertError(f"{path.name} is not a safetensors file (header is not an object)")
    return header, 8 + n


def _tensors_of(path: Path) -> dict[str, Tensor]:
    header, base = _header(path)
    size = path.stat().st_size
    found: dict[str, Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = str(info["dtype"])
            shape = tuple(int(d) for d in info["shape"])
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConvertError(f"{path.name}: tensor {name} has a malformed entry") from exc
        if dtype not in DTYPES:
            raise ConvertError(
                f"{path.name}: tensor {name} is {dtype}; only F32, F16 and BF16 checkpoints "
                "can be converted"
            )
        t = Tensor(name, dtype, shape, path, base + start)
        if end - start != t.nbytes or base + end > size or min(shape, default=1) < 0:
            raise ConvertError(f"{path.name} is truncated or corrupt at tensor {name}")
        found[name] = t
    return found


def shards(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConvertError(f"{index.name} is not a valid safetensors index") from exc
        paths = []
        for n in names:
            p = directory / str(n)
            if "/" in str(n) or not p.is_file():
                raise ConvertError(f"safetensors shard missing: {n}")
            paths.append(p)
        return paths
    found = sorted(directory.glob("*.safetensors"))
    if not found:
        raise ConvertError(f"no .safetensors files in {directory.name}")
    return found


def tensors(directory: Path) -> dict[str, Tensor]:
    """Every tensor of the checkpoint by name (headers only)."""
    out: dict[str, Tensor] = {}
    for shard in shards(directory):
        out.update(_tensors_of(shard))
    return out


def config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise ConvertError(f"{directory.name} has no config.json (a Safetensors model needs one)")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConvertError("config.json is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ConvertError("config.json is not a JSON object")
    if isinstance(data.get("text_config"), dict):  # multimodal wrappers keep the LM here
        data = {**data, **data["text_config"]}
    return data


def _decode(raw: bytes, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32)
    return np.frombuffer(raw, dtype=DTYPES[dtype][0] or np.float32).astype(np.float32)


def read_rows(t: Tensor, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) as float32, shaped (stop - start, *shape[1:])."""
    width = t.row_size * DTYPES[t.dtype][1]
    fd = os.open(t.path, os.O_RDONLY)
    try:
        raw = os.pread(fd, (stop - start) * width, t.offset + start * width)
    finally:
        os.close(fd)
    if len(raw) != (stop - start) * width:
        raise ConvertError(f"{t.path.name} is truncated at tensor {t.name}")
    data = _decode(raw, t.dtype)
    return data.reshape((stop - start, *t.shape[1:])) if t.shape else data.reshape(())


def row_slices(t: Tensor, unit: int = 1) -> Iterator[tuple[int, int]]:
    """[start, stop) row ranges of about SLICE_BYTES each, in multiples of `unit` rows."""
    width = max(1, t.row_size * DTYPES[t.dtype][1])
    step = max(unit, (SLICE_BYTES // width) // unit * unit)
    for start in range(0, t.rows, step):
        yield start, min(t.rows, start + step)
