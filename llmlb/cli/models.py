"""`list`, `show`, `rm`: the local model store, as the node server reports it."""

from __future__ import annotations

import click

from llmlb.cli import render
from llmlb.client import Client

NO_TEMPLATE = "no chat template: raw completion only"
TOOL_FORMATS = {
    "hermes": "<tool_call> blocks (the template's own format)",
    "llama3": "Llama 3 JSON (the template's own format)",
    "generic": "generic JSON (the template has no tool-call format of its own)",
}
NO_ITEM = {
    "license": "No license was specified for this model.",
    "parameters": "No parameters were specified for this model.",
    "template": "No template was specified for this model.",
    "system": "No system prompt was specified for this model.",
}


def _name(m: dict) -> str:
    name = m["name"].removesuffix(":latest")  # the API's tagged name; the catalog's is shorter
    return f"{name} (readonly)" if m.get("readonly") else name


def _modified(m: dict) -> str:
    d = m.get("downloading")
    if d:
        return f"downloading {d['percent']}%"
    return render.ago(m.get("modified_at"))


def list_models() -> None:
    """The contract's NAME SIZE MODIFIED, then ALIAS: the short name people type (shown when
    it differs from the name). A trailing column keeps the contract's columns where they were."""
    models = Client.node().get("/api/tags")["models"]
    rows = [
        [
            _name(m),
            render.size(m.get("size")),
            _modified(m),
            render.alias(m.get("alias"), m["name"].removesuffix(":latest")),
        ]
        for m in models
    ]
    click.echo(render.table(["NAME", "SIZE", "MODIFIED", "ALIAS"], rows))


def _format(info: dict) -> str:
    fmt = ((info.get("details") or {}).get("format") or "-").replace("gguf", "GGUF")
    fmt = fmt.replace("safetensors", "Safetensors")
    source = info.get("converted_from") or {}
    if source:  # a checkpoint converted when it was registered: say where it came from
        dtype = f", {source['dtype']}" if source.get("dtype") else ""
        fmt += f" (converted from {source.get('format', 'Safetensors')}{dtype})"
    return fmt


def model_block(info: dict) -> str:
    details = info.get("details") or {}
    lines = [f"Model: {info['name']}"]
    if info.get("alias"):
        lines.append(f"  Alias: {info['alias']}")
    lines += [
        f"  Architecture: {details.get('family') or '-'}",
        f"  Parameters: {details.get('parameter_size') or '-'}",
        f"  Quantization: {details.get('quantization_level') or '-'}",
        f"  Context Length: {info.get('context_length') or '-'}",
        f"  Format: {_format(info)}",
        f"  Size: {render.size(info.get('size'))}",
        f"  License: {(info.get('license') or '-').strip().splitlines()[0] if info.get('license') else '-'}",
    ]
    if details.get("parent_model"):
        lines.append(f"  Parent: {details['parent_model']}")
    if info.get("adapters"):
        lines.append("  Adapters: " + ", ".join(info["adapters"]))
    if info.get("capabilities"):
        lines.append("  Capabilities: " + ", ".join(info["capabilities"]))
    if info.get("tool_format"):
        lines.append(f"  Tool Calls: {TOOL_FORMATS.get(info['tool_format'], info['tool_format'])}")
    if (details.get("format") or "").lower() == "gguf" and not (info.get("template") or "").strip():
        # llama.cpp would fall back to a generic template the model was never trained on
        lines.append(f"  Note: {NO_TEMPLATE}")
    if info.get("held_back"):
        lines.append(f"  Held Back: {info['held_back']}")
    return "\n".join(lines)


def show_model(model: str, item: str | None) -> None:
    info = Client.node().post("/api/show", {"model": model})
    if item is None:
        click.echo(model_block(info))
        return
    value = (info.get(item) or "").strip("\n")
    click.echo(
        value if value.strip() else NO_ITEM.get(item, f"No {item} was specified for this model.")
    )


def remove_model(model: str) -> None:
    Client.node().delete("/api/delete", {"model": model})
    click.echo(f"deleted '{model}'")
