"""Lay out an ollama store (manifests + blobs) in a directory, as ollama does."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def _blob(root: Path, data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = root / "blobs" / digest.replace(":", "-")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def add_model(
    root: Path,
    name: str,
    gguf_bytes: bytes,
    tag: str = "latest",
    namespace: str = "library",
    host: str = "registry.ollama.ai",
    template: str | None = "{{ .Prompt }}",
    system: str | None = None,
    license: str | None = "MIT License",
    params: dict | None = None,
) -> Path:
    root = Path(root)
    layers = [{"mediaType": "application/vnd.ollama.image.model", **_blob(root, gguf_bytes)}]
    for kind, text in (("template", template), ("system", system), ("license", license)):
        if text is not None:
            layers.append(
                {"mediaType": f"application/vnd.ollama.image.{kind}", **_blob(root, text.encode())}
            )
    if params is not None:
        layers.append(
            {
                "mediaType": "application/vnd.ollama.image.params",
                **_blob(root, json.dumps(params).encode()),
            }
        )
    config = _blob(root, b'{"model_format":"gguf"}')
    manifest = root / "manifests" / host / namespace / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config},
                "layers": layers,
            }
        )
    )
    return manifest


def snapshot(root: Path) -> dict[str, str]:
    """Path -> sha256 of every file, to prove nothing changed."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }
