"""Read a GGUF file's header (key/values and tensor infos) and nothing after it.

`gguf.GGUFReader` maps the whole file and turns every key/value into numpy objects, the
150k-entry token and merge lists included: about 9 s for a Qwen-sized vocabulary, which a
pull spent silently at "writing manifest". This reader walks the header sequentially, keeps
the scalar and string values, skips arrays without building them, and stops where the tensor
data begins, so its cost does not depend on the vocabulary or on the file's size. Short numeric
arrays (per-layer head counts) are kept.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

MAGIC = b"GGUF"
MAX_STRING = 64 << 20  # a chat template is kilobytes; anything this long is a broken file
MAX_DIMS = 8
DEFAULT_ALIGNMENT = 32
SMALL_ARRAY = 1024  # numeric arrays up to this long are kept (per-layer head counts)

# value type -> struct format of one item (8 = string and 9 = array are handled apart)
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


class HeaderError(ValueError):
    """The header is not a readable GGUF header (truncated, or values out of range)."""


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type: int
    offset: int  # from the start of the data section

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class GGUFHeader:
    version: int
    values: dict[str, Any] = field(default_factory=dict)  # long and string arrays left out
    arrays: list[str] = field(default_factory=list)  # the keys of those left out
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0  # where the tensor data starts in the file


class _Cursor:
    def __init__(self, fh: BinaryIO, size: int, endian: str):
        self.fh, self.size, self.endian = fh, size, endian
        self.pos = fh.tell()

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise HeaderError("the header runs past the end of the file (truncated)")
        data = self.fh.read(n)
        if len(data) != n:
            raise HeaderError("the header runs past the end of the file (truncated)")
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise HeaderError("the header runs past the end of the file (truncated)")
        self.fh.seek(n, 1)
        self.pos += n

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(self.endian + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("Q")
        if n > MAX_STRING:
            raise HeaderError(f"a string of {n} bytes in the header")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            return self.array()
        raise HeaderError(f"unknown value type {kind}")

    def array(self) -> list | None:
        """A short numeric array as a list; any other array is skipped (None)."""
        kind, count = self.unpack("I"), self.unpack("Q")
        if kind in _SCALARS and count <= SMALL_ARRAY:
            fmt = _SCALARS[kind]
            data = self.take(count * struct.calcsize(fmt))
            return list(struct.unpack(f"{self.endian}{count}{fmt}", data))
        self.skip_items(kind, count)
        return None

    def skip_array(self) -> None:
        self.skip_items(self.unpack("I"), self.unpack("Q"))

    def skip_items(self, kind: int, count: int) -> None:
        if count > self.size:
            raise HeaderError(f"an array of {count} items in the header")
        if kind in _SCALARS:
            self.skip(count * struct.calcsize(_SCALARS[kind]))
        elif kind == _STRING:
            for _ in range(count):
                self.skip(self.unpack("Q"))
        elif kind == _ARRAY:
            for _ in range(count):
                self.skip_array()
        else:
            raise HeaderError(f"unknown array item type {kind}")


def read_header(fh: BinaryIO, size: int) -> GGUFHeader:
    """Parse the header from the start of `fh` (a file of `size` bytes); reads no tensor data."""
    fh.seek(0)
    if fh.read(4) != MAGIC:
        raise HeaderError("wrong magic bytes")
    raw = fh.read(4)
    if len(raw) != 4:
        raise HeaderError("the header runs past the end of the file (truncated)")
    endian = "<"
    version = struct.unpack("<I", raw)[0]
    if version & 0xFFFF == 0:  # a big-endian file reads as 0xNN000000 here
        endian, version = ">", struct.unpack(">I", raw)[0]
    if version not in (2, 3):
        raise HeaderError(f"unsupported GGUF version {version}")
    cur = _Cursor(fh, size, endian)
    n_tensors, n_values = cur.unpack("Q"), cur.unpack("Q")
    if n_tensors > size or n_values > size:
        raise HeaderError("impossible tensor or key counts")
    header = GGUFHeader(version)
    for _ in range(n_values):
        key = cur.string()
        value = cur.value(cur.unpack("I"))
        if value is not None:
            header.values[key] = value
        else:
            header.arrays.append(key)
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("I")
        if n_dims > MAX_DIMS:
            raise HeaderError(f"tensor {name} has {n_dims} dimensions")
        shape = tuple(cur.unpack("Q") for _ in range(n_dims))
        header.tensors.append(TensorInfo(name, shape, cur.unpack("I"), cur.unpack("Q")))
    alignment = header.values.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        alignment = DEFAULT_ALIGNMENT
    header.data_offset = -(-cur.pos // alignment) * alignment
    return header
