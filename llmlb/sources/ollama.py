"""Models that ollama downloaded, read in place and never modified (`ollama:<name>`).

The store is read defensively: its files are another program's, and one bad one (a manifest
of `[]`, a layer that is not an object, a size of 1e400, a blob nested 5,000 deep, a file of
gigabytes) is skipped with one warning line, while lists, heartbeats and lookups go on.
Manifests and small blobs are decoded into fixed types of bounded size and depth.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from llmlb.errors import ValidationError

log = logging.getLogger("llmlb.ollama")

PREFIX = "ollama:"
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NS = "library"
MODEL = "application/vnd.ollama.image.model"
LAYERS = {
    "projector": "application/vnd.ollama.image.projector",
    "template": "application/vnd.ollama.image.template",
    "system": "application/vnd.ollama.image.system",
    "params": "application/vnd.ollama.image.params",
    "license": "application/vnd.ollama.image.license",
}
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_MANIFEST = 1024 * 1024  # a manifest lists a handful of layers: a few KB
MAX_TEXT_BLOB = 4 * 1024 * 1024  # template, system prompt, license, params
Scalar = str | int | float | bool | None


class Layer(msgspec.Struct, kw_only=True):
    media_type: str = msgspec.field(default="", name="mediaType")
    digest: str = ""
    size: Annotated[int, Meta(ge=0, le=2**62)] | None = None


class Manifest(msgspec.Struct, kw_only=True):
    layers: Annotated[list[Layer], Meta(max_length=1000)] = []


Params = dict[str, Scalar | list[Scalar]]  # ollama's params: values, and lists (`stop`)
_warned: set[tuple[str, int, int]] = set()  # (file, mtime, size) already reported


class BadFile(ValueError):
    """A file of the store that is not what it should be."""


def _warn_once(path: Path, problem: object) -> None:
    """One warning line per bad file (until it changes), however often the store is read."""
    try:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        key = (str(path), 0, 0)
    if key not in _warned:
        if len(_warned) > 10_000:
            _warned.clear()
        _warned.add(key)
        log.warning("skipping %s in the ollama store: %s", path, str(problem)[:200])


def _read(path: Path, cap: int) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise BadFile(f"larger than {cap} bytes")
    return data


def _decode(path: Path, cap: int, kind: object):
    try:
        return msgspec.json.decode(_read(path, cap), type=kind)
    except RecursionError:
        raise BadFile("nested too deeply") from None
    except msgspec.MsgspecError as exc:
        raise BadFile(str(exc)) from None


@dataclass(frozen=True)
class OllamaModel:
    """The contract's OllamaModel: a model that ollama owns on disk; we only ever read it."""

    name: str
    manifest_path: str
    blob_digest: str
    blob_path: str
    size_bytes: int
    readonly: bool = True


@dataclass
class OllamaEntry:
    """An ollama model with the extra layers we can read."""

    model: OllamaModel
    display: str
    modified: datetime
    projector_path: str | None = None
    template: str | None = None
    system: str | None = None
    params: dict | None = None
    license: str | None = None


def _safe_part(part: str) -> bool:
    return bool(part) and part not in (".", "..") and "/" not in part and "\\" not in part


def parse_name(name: str) -> tuple[str, str, str, str]:
    """`ollama:llama3.2` -> (registry.ollama.ai, library, llama3.2, latest)."""
    ref = name.removeprefix(PREFIX)
    tag = "latest"
    if ":" in ref.rsplit("/", 1)[-1]:
        ref, tag = ref.rsplit(":", 1)
    parts = ref.split("/")
    if len(parts) == 1:
        host, ns, model = DEFAULT_HOST, DEFAULT_NS, parts[0]
    elif len(parts) == 2:
        host, (ns, model) = DEFAULT_HOST, parts
    elif len(parts) == 3:
        host, ns, model = parts
    else:
        raise ValidationError(f"invalid ollama model name '{name}'")
    if not all(_safe_part(p) for p in (host, ns, model, tag)):
        raise ValidationError(f"invalid ollama model name '{name}'")
    return host, ns, model, tag


def display_name(host: str, ns: str, model: str, tag: str) -> str:
    ref = (
        model
        if (host, ns) == (DEFAULT_HOST, DEFAULT_NS)
        else (f"{ns}/{model}" if host == DEFAULT_HOST else f"{host}/{ns}/{model}")
    )
    return PREFIX + (ref if tag == "latest" else f"{ref}:{tag}")


def _blob(root: Path, digest: object) -> Path:
    """A layer's file: the digest names it, so it must be a digest, not a path."""
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise ValueError(f"layer digest {str(digest)[:80]!r} is not sha256:<64 hex digits>")
    return root / "blobs" / digest.replace(":", "-")


def _text(root: Path, layer: Layer | None) -> str | None:
    """A text layer; a missing or bad one is left out (the model is still listed). A digest
    that is not one makes the whole manifest suspect: _load skips it."""
    if layer is None:
        return None
    path = _blob(root, layer.digest)
    try:
        return _read(path, MAX_TEXT_BLOB).decode("utf-8", errors="replace")
    except BadFile as exc:
        _warn_once(path, exc)
    except OSError:
        pass
    return None


def _params(root: Path, layer: Layer | None) -> dict | None:
    if layer is None:
        return None
    path = _blob(root, layer.digest)
    try:
        return _decode(path, MAX_TEXT_BLOB, Params)
    except BadFile as exc:
        _warn_once(path, exc)
    except OSError:
        pass
    return None


def _load(
    root: Path, manifest: Path, host: str, ns: str, model: str, tag: str
) -> OllamaEntry | None:
    try:
        layers = {
            layer.media_type: layer for layer in _decode(manifest, MAX_MANIFEST, Manifest).layers
        }
        main = layers.get(MODEL)
        if main is None:
            return None
        blob = _blob(root, main.digest)
        if not blob.is_file():
            return None
        projector = layers.get(LAYERS["projector"])
        return OllamaEntry(
            model=OllamaModel(
                name=display_name(host, ns, model, tag),
                manifest_path=str(manifest),
                blob_digest=main.digest,
                blob_path=str(blob),
                size_bytes=main.size or blob.stat().st_size,
            ),
            display=display_name(host, ns, model, tag),
            modified=datetime.fromtimestamp(manifest.stat().st_mtime, UTC),
            projector_path=str(_blob(root, projector.digest)) if projector else None,
            template=_text(root, layers.get(LAYERS["template"])),
            system=_text(root, layers.get(LAYERS["system"])),
            params=_params(root, layers.get(LAYERS["params"])),
            license=_text(root, layers.get(LAYERS["license"])),
        )
    except (OSError, ValueError) as exc:  # BadFile, a digest that is not one, unreadable
        _warn_once(manifest, exc)
        return None


def scan(root: Path) -> list[OllamaEntry]:
    """Every readable model in ollama's store; a missing or unreadable store is simply empty."""
    base = root / "manifests"
    entries: list[OllamaEntry] = []
    try:
        manifests = [p for p in base.glob("*/*/*/*") if p.is_file()]
    except OSError:
        return entries
    for manifest in sorted(manifests):
        host, ns, model, tag = manifest.relative_to(base).parts
        entry = _load(root, manifest, host, ns, model, tag)
        if entry:
            entries.append(entry)
    return entries


def find(root: Path, name: str) -> OllamaEntry | None:
    host, ns, model, tag = parse_name(name)
    manifest = root / "manifests" / host / ns / model / tag
    if not manifest.is_file():
        return None
    return _load(root, manifest, host, ns, model, tag)
