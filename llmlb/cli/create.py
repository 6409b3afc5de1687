"""`llmlb node create` and `llmlb node cp`: a Modelfile's files go to the node as blobs (only
those it does not hold already, by sha256), then /api/create builds the model there.

FROM and ADAPTER paths are read relative to the Modelfile. A FROM that names no file is a
model the node has (`FROM qwen2.5-0.5b-instruct`); one that looks like a path
(./x, /x, ~/x, *.gguf, *.safetensors) must exist.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import click

from llmlb.client import Client
from llmlb.errors import LlmlbError, ValidationError
from llmlb.sources.modelfile import Modelfile, parse

SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
    "model.safetensors.index.json",
)


def _local(value: str, base: Path, line: int, what: str) -> Path | None:
    """The file or directory `value` names, None when it names a model; a path that looks
    like one but does not exist is an error naming its line."""
    pathlike = value.startswith(("/", "./", "../", "~")) or value.endswith(
        (".gguf", ".safetensors")
    )
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if path.exists():
        return path
    if pathlike or what == "ADAPTER":
        raise ValidationError(f"Modelfile line {line}: {what} {value}: no such file or directory")
    return None


def _files_of(path: Path, line: int) -> list[Path]:
    if path.is_file():
        return [path]
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        return shards + [path / n for n in SIDE_FILES if (path / n).is_file()]
    ggufs = sorted(path.glob("*.gguf"))
    if ggufs:
        return ggufs
    raise ValidationError(
        f"Modelfile line {line}: FROM {path}: holds no .gguf or .safetensors files"
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _send(client: Client, path: Path) -> str:
    """The file's digest, after uploading it unless the node has it."""
    digest = _sha256(path)
    if not client.exists(f"/api/blobs/{digest}"):
        click.echo(f"copying file {path.name} ({digest[:19]}…)")
        with open(path, "rb") as fh:
            client.upload(f"/api/blobs/{digest}", fh, path.stat().st_size)
    return digest


def request_of(mf: Modelfile, base: Path, client: Client) -> dict:
    files: dict[str, str] = {}
    source = None
    paths: list[Path] = []
    for line, value in mf.froms:
        found = _local(value, base, line, "FROM")
        if found is None:
            if source is not None or len(mf.froms) > 1:
                raise ValidationError(
                    f"Modelfile line {line}: FROM {value}: no such file or directory"
                )
            source = value
        else:
            paths += _files_of(found, line)
    adapters: dict[str, str] = {}
    if paths or mf.adapters:
        click.echo("gathering model components")
    for p in paths:
        if p.name in files:
            raise ValidationError(f"two files named {p.name} in the FROM lines")
        files[p.name] = _send(client, p)
    for line, value in mf.adapters:
        found = _local(value, base, line, "ADAPTER")
        assert found is not None
        if not found.is_file():
            raise ValidationError(f"Modelfile line {line}: ADAPTER {value}: not a file")
        adapters[found.name] = _send(client, found)
    body: dict = {"from": source} if source else {"files": files}
    if adapters:
        body["adapters"] = adapters
    extras: tuple[tuple[str, Any], ...] = (
        ("template", mf.template),
        ("system", mf.system),
        ("parameters", mf.parameters or None),
        ("messages", mf.messages or None),
        ("license", "\n".join(mf.license) if mf.license else None),
    )
    for key, value in extras:
        if value is not None:
            body[key] = value
    return body


def create_model(name: str, modelfile: str | None, quantize: str | None) -> None:
    path = Path(modelfile or "Modelfile").expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = "" if modelfile else "; give one with -f"
        raise ValidationError(f"no Modelfile at {path}{hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read {path}: {exc}") from None
    client = Client.node()
    body = request_of(parse(text), path.resolve().parent, client)
    body.update(model=name, stream=True)
    if quantize:
        body["quantize"] = quantize
    _show(client, body)


def _show(client: Client, body: dict) -> None:
    tty = sys.stdout.isatty()
    last = None
    with client.stream("POST", "/api/create", body, timeout=None) as items:
        for item in items:
            status = str(item.get("status", ""))
            total, done = item.get("total"), item.get("completed")
            if total and tty:
                click.echo(f"\r{status} {done}/{total}", nl=False)
                if done == total:
                    click.echo("")
                last = status
                continue
            if status != last:
                click.echo(status)
                last = status
    if last != "success":
        raise LlmlbError("the server ended the create without saying it succeeded")


def copy_model(source: str, destination: str) -> None:
    body = {"source": source, "destination": destination}
    Client.node().post("/api/copy", body, timeout=24 * 3600)  # a copy across file systems
    click.echo(f"copied '{source}' to '{destination}'")
