"""Models that ollama downloaded, read in place and never modified (`ollama:<name>`)."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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


def _read_text(root: Path, layer: dict | None) -> str | None:
    if not layer:
        return None
    try:
        return _blob(root, layer["digest"]).read_text(errors="replace")
    except OSError:
        return None


def _load(
    root: Path, manifest: Path, host: str, ns: str, model: str, tag: str
) -> OllamaEntry | None:
    try:
        data = json.loads(manifest.read_text())
        layers = {layer.get("mediaType"): layer for layer in data.get("layers", [])}
        main = layers.get(MODEL)
        if not main:
            return None
        blob = _blob(root, main["digest"])
        if not blob.is_file():
            return None
        params_text = _read_text(root, layers.get(LAYERS["params"]))
        projector = layers.get(LAYERS["projector"])
        return OllamaEntry(
            model=OllamaModel(
                name=display_name(host, ns, model, tag),
                manifest_path=str(manifest),
                blob_digest=main["digest"],
                blob_path=str(blob),
                size_bytes=int(main.get("size") or blob.stat().st_size),
            ),
            display=display_name(host, ns, model, tag),
            modified=datetime.fromtimestamp(manifest.stat().st_mtime, UTC),
            projector_path=str(_blob(root, projector["digest"])) if projector else None,
            template=_read_text(root, layers.get(LAYERS["template"])),
            system=_read_text(root, layers.get(LAYERS["system"])),
            params=json.loads(params_text) if params_text else None,
            license=_read_text(root, layers.get(LAYERS["license"])),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.debug("skipping unreadable ollama manifest %s: %s", manifest, exc)
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
