"""What a model's Modelfile puts into each of its requests, as ollama applies it: the SYSTEM
prompt when the chat has none of its own, the MESSAGEs before the chat, and the PARAMETERs
wherever the request did not set that option itself."""

from __future__ import annotations

from typing import Any

from llmlb.engine.base import GenOptions
from llmlb.sources.modelfile import PARAMETERS
from llmlb.store.models import Model

FIELDS = {name: name for name in PARAMETERS if name != "num_predict"} | {
    "num_predict": "max_tokens"
}


def parameters(model: Model) -> dict[str, Any]:
    """The model's default parameters (a created model's, or those of ollama's store)."""
    return model.options or (model.details or {}).get("params") or {}


def apply(model: Model, opts: GenOptions) -> None:
    for name, value in parameters(model).items():
        target = FIELDS.get(name)
        if target is None or target in opts.given:
            continue
        if target == "max_tokens":
            value = value if isinstance(value, int) and value > 0 else None
        elif target == "seed":
            value = value % 2**32 if isinstance(value, int) and value >= 0 else None
        elif target == "stop":
            value = [value] if isinstance(value, str) else list(value)
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            continue  # a value of another type (an older row): the request's default stays
        setattr(opts, target, value)


def messages(model: Model, chat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The MESSAGEs first, then the chat; the SYSTEM prompt first unless the chat has one."""
    lead = 0
    while lead < len(chat) and chat[lead].get("role") == "system":
        lead += 1
    out = list(chat[:lead]) + [dict(m) for m in model.messages or []] + list(chat[lead:])
    if model.system_prompt and not any(m.get("role") == "system" for m in out):
        out.insert(0, {"role": "system", "content": model.system_prompt})
    return out
