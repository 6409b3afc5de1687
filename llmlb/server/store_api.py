"""ollama-compatible model store API: GET /api/tags, POST /api/show, DELETE /api/delete."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from anyio import to_thread
from litestar import Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.engine import Engine

from llmlb.engine import chat_plan, model_defaults
from llmlb.engine.base import TemplateCaps
from llmlb.engine.crashes import fingerprint
from llmlb.engine.scheduler import Scheduler
from llmlb.engine.templates import Templates
from llmlb.server.node_services import NodeServices
from llmlb.server.requests import ModelOnly
from llmlb.sources import modelfile
from llmlb.sources.gguf_header import HeaderError
from llmlb.sources.metadata import format_params, gguf_info
from llmlb.store import catalog as store
from llmlb.store import downloads
from llmlb.store.catalog import resolve as resolve_model
from llmlb.store.models import Model
from llmlb.validation import Format, Source

log = logging.getLogger("llmlb.server")


def _iso(dt) -> str | None:
    return dt.isoformat() if dt else None


def details(m: Model) -> dict[str, Any]:
    return {
        "parent_model": (m.details or {}).get("parent") or "",
        "format": m.format.lower(),
        "family": m.architecture,
        "families": [m.architecture] if m.architecture else None,
        "parameter_size": format_params(m.parameters),
        "quantization_level": m.quantization or "",
    }


def tagged(name: str) -> str:
    """A name as ollama lists it, with its tag (`:latest`: the model's one file), so that
    clients which shorten `x:latest` to `x` (llm-ollama) find the short name."""
    return name if ":" in name else name + ":latest"


def _tag(m: Model, readonly: bool = False) -> dict[str, Any]:
    return {
        "name": tagged(m.name),
        "model": tagged(m.name),
        "modified_at": _iso(m.created_at),
        "size": m.size_bytes,
        "digest": m.digest or "",
        "details": details(m),
        "alias": m.alias,
        "readonly": readonly,
    }


def _tags(engine: Engine) -> dict:
    models = [_tag(m) for m in store.all_models(engine)]
    for entry in store.ollama_models():
        models.append(
            {
                "name": entry.display,
                "model": entry.display,
                "modified_at": _iso(entry.modified),
                "size": entry.model.size_bytes,
                "digest": entry.model.blob_digest.removeprefix("sha256:"),
                "details": {"format": "gguf"},
                "alias": None,
                "readonly": True,
            }
        )
    active = downloads.active(engine)
    listed = {m["name"] for m in models}
    coming = store.coming_aliases(engine, [d.model_name for d in active])
    for d in active:
        if tagged(d.model_name) in listed:
            continue
        percent = int(100 * d.downloaded_bytes / d.total_bytes) if d.total_bytes else 0
        models.append(
            {
                "name": tagged(d.model_name),
                "model": tagged(d.model_name),
                "modified_at": _iso(d.updated_at),
                "size": d.total_bytes,
                "digest": "",
                "details": {},
                "alias": coming[d.model_name],  # the one it will get: typed, it says "downloading"
                "readonly": False,
                "downloading": {
                    "status": d.status,
                    "percent": percent,
                    "completed": d.downloaded_bytes,
                    "total": d.total_bytes,
                },
            }
        )
    models.sort(key=lambda m: m["modified_at"] or "", reverse=True)
    return {"models": models}


@get("/api/tags", sync_to_thread=True)
def tags(catalog: NamedDependency[Engine]) -> dict:
    return _tags(catalog)


def _modelfile(m: Model, template: str | None, params: dict) -> str:
    """A Modelfile that `llmlb node create` reads back to this model: its files by path (the
    CLI finds them on the node by digest, so nothing is uploaded again)."""
    froms = [m.path] + ([m.projector_path] if m.projector_path else [])
    return modelfile.render(
        froms,
        adapters=[str(a.get("path")) for a in m.adapters or []],
        template=template,
        system=m.system_prompt,
        parameters=params,
        messages=m.messages,
        license=m.license,
    )


# architectures of encoder models, which only embed (for models registered before the
# catalog kept the GGUF's pooling type)
ENCODERS = {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "t5encoder",
            "modern-bert", "neo-bert"}  # fmt: skip


def _capabilities(m: Model, template: TemplateCaps | None) -> list[str]:
    """As ollama reports them: what the model's files and template let it do. Any model
    with a chat template takes tools (natively, or in the generic JSON format); it thinks
    when its template has <think> or an enable_thinking switch (`template`: what it renders,
    None when it cannot be rendered)."""
    details = m.details or {}
    if details.get("pooling_type") is not None or m.architecture in ENCODERS:
        return ["embedding"]
    caps = ["completion"]
    if m.projector_path:
        caps.append("vision")
    if m.chat_template:
        caps.append("tools")
        if template is not None and template.thinking:
            caps.append("thinking")
    return caps


def tool_format(m: Model) -> str | None:
    """How the model calls tools: its template's own format, or the generic JSON one."""
    return chat_plan.tool_format(m.chat_template) if m.chat_template else None


def show_body(m: Model, template_caps: TemplateCaps | None = None) -> dict[str, Any]:
    extra = m.details or {}
    template = extra.get("template") or m.chat_template or extra.get("ollama_template")
    params = model_defaults.parameters(m)
    info: dict[str, Any] = {
        "general.architecture": m.architecture,
        "general.parameter_count": m.parameters,
    }
    if m.architecture and m.context_length:
        info[f"{m.architecture}.context_length"] = m.context_length
    body = {
        "license": m.license or "",
        "modelfile": _modelfile(m, template, params),
        "parameters": "\n".join(
            f"{k} {v}"
            for k, values in params.items()
            for v in (values if isinstance(values, list) else [values])
        ),
        "template": template or "",
        "system": m.system_prompt or "",
        "details": details(m),
        "model_info": info,
        "capabilities": _capabilities(m, template_caps),
        "modified_at": _iso(m.created_at),
        # llmlb additions, used by `llmlb node show`
        "name": m.name,
        "alias": m.alias,
        "size": m.size_bytes,
        "context_length": m.context_length,
        "parameter_count": m.parameters,
        "source": m.source,
        "readonly": m.source == Source.OLLAMA,
        "tool_format": tool_format(m),
        "converted_from": extra.get("converted_from"),
        "adapters": [Path(str(a.get("path"))).name for a in m.adapters or []],
    }
    return body


def _file_info(m: Model) -> dict[str, Any]:
    """The GGUF's own metadata (ollama's model_info); nothing when the file cannot be read."""
    if m.format != Format.GGUF:
        return {}
    try:
        return gguf_info(Path(m.path))
    except (OSError, HeaderError) as exc:
        log.warning("cannot read the metadata of %s: %s", m.name, exc)
        return {}


@post("/api/show", status_code=200)
async def show(
    data: JSONBody[ModelOnly],
    catalog: NamedDependency[Engine],
    templates: NamedDependency[Templates],
    scheduler: NamedDependency[Scheduler],
) -> dict:
    m = await to_thread.run_sync(resolve_model, catalog, data.target)
    caps = await templates.caps_or_none(m.chat_template, m.name) if m.chat_template else None
    body = show_body(m, caps)
    body["model_info"] = {**await to_thread.run_sync(_file_info, m), **body["model_info"]}
    hold = scheduler.crashes.held(m.name, fingerprint(m))
    body["held_back"] = hold.why if hold is not None else None
    return body


@delete("/api/delete", status_code=200)
async def remove(data: JSONBody[ModelOnly], node: NamedDependency[NodeServices]) -> Response:
    """Unload, cancel a running download, then delete row and files."""
    typed = data.target  # a name, an alias, `:latest` or `:TAG`, as catalog.resolve takes them
    if typed.startswith("ollama:"):  # refused with a clear error: ollama's store is read-only
        await to_thread.run_sync(store.delete_model, node.catalog, typed, node.models_dir)
    name, m = await to_thread.run_sync(store.lookup, node.catalog, typed)
    cancelled = await node.downloads.cancel(name)
    if m is None:
        if not cancelled:
            raise await to_thread.run_sync(store.missing, node.catalog, typed)
        return Response(content=b"", status_code=200)
    await node.scheduler.unload(name)
    await to_thread.run_sync(store.delete_model, node.catalog, name, node.models_dir)
    return Response(content=b"", status_code=200)


routes = [tags, show, remove]
