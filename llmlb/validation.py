"""The data model's validation rules, as plain functions with one-line messages."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

from llmlb.errors import ValidationError


class Format(StrEnum):
    """A model file's format."""

    GGUF = "GGUF"
    SAFETENSORS = "Safetensors"


class Source(StrEnum):
    """Where a model came from."""

    LOCAL = "Local"
    OLLAMA = "Ollama"
    HUGGINGFACE = "HuggingFace"


FORMATS = tuple(f.value for f in Format)
SOURCES = tuple(s.value for s in Source)
_NAME = re.compile(r"^[A-Za-z0-9/._-]+$")
MAX_NAME = 200


def check_name(name: object) -> str:
    """A model name: letters, digits, `/ - _ .`; no `..`, no leading `/`, no empty segment."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("invalid model name: it must not be empty")
    if len(name) > MAX_NAME:
        raise ValidationError(f"invalid model name: longer than {MAX_NAME} characters")
    if not _NAME.match(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9/._-]", c)})
        shown = " ".join(repr(c) for c in bad[:5])
        raise ValidationError(
            f"invalid model name '{name}': only letters, digits and / - _ . are allowed (found {shown})"
        )
    if name.startswith("/"):
        raise ValidationError(f"invalid model name '{name}': it must not start with '/'")
    parts = name.split("/")
    if any(p == "" for p in parts):
        raise ValidationError(f"invalid model name '{name}': empty path segment")
    if any(p in (".", "..") for p in parts):
        raise ValidationError(f"invalid model name '{name}': '.' and '..' segments are not allowed")
    return name


def check_format(fmt: object) -> str:
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ValidationError(f"invalid model format {fmt!r}: must be GGUF or Safetensors")
    return fmt


def check_source(source: object) -> str:
    if not isinstance(source, str) or source not in SOURCES:
        raise ValidationError(
            f"invalid model source {source!r}: must be one of {', '.join(SOURCES)}"
        )
    return source


def check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValidationError(f"invalid model size {size!r}: must be greater than 0 bytes")
    return size


def check_path(path: object) -> str:
    if not path or not Path(str(path)).exists():
        raise ValidationError(f"model path does not exist: {path}")
    return str(path)


def check_range(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValidationError(f"{name} must be a number from {low} to {high} (got {value!r})")
    return float(value)


MAX_HUB_PATH = 1000


def check_hub_path(path: object) -> str:
    """A file name from a Hub listing, used as a relative path under our own directories.

    A mirror is outside data: no absolute path, no `..`, no backslash, no empty or `.`
    segment, no control character. (The join itself is checked again by `inside`.)
    """
    if not isinstance(path, str) or not path:
        raise ValidationError("unsafe file name in the repo listing: it is empty")
    shown = path.encode("unicode_escape").decode("ascii")[:120]
    if len(path) > MAX_HUB_PATH:
        raise ValidationError(f"unsafe file name '{shown}…' in the repo listing: too long")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in path):
        raise ValidationError(f"unsafe file name '{shown}' in the repo listing: control character")
    if "\\" in path:
        raise ValidationError(f"unsafe file name '{shown}' in the repo listing: backslash")
    if path.startswith("/"):
        raise ValidationError(f"unsafe file name '{shown}' in the repo listing: absolute path")
    parts = path.split("/")
    for bad, why in (("..", "a '..' segment"), ("", "an empty segment"), (".", "a '.' segment")):
        if bad in parts:
            raise ValidationError(f"unsafe file name '{shown}' in the repo listing: {why}")
    return path


def inside(base: Path, relative: str) -> Path:
    """`base / relative`, after checking that it resolves inside `base` (symlinks followed)."""
    check_hub_path(relative)
    target = Path(base) / relative
    root = Path(base).resolve()
    if root not in target.resolve().parents:
        raise ValidationError(f"file name '{relative}' would be written outside {base}")
    return target
