"""Request-body parsing shared by every API: one clear 400 for malformed input."""

from __future__ import annotations

import json
from typing import Any

from litestar import Request

from llmlb.errors import BadRequest


async def json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"request body is not valid JSON: {exc.msg} at position {exc.pos}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise BadRequest("request body is not valid UTF-8") from exc
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def field(
    data: dict,
    name: str,
    kind: type | tuple[type, ...],
    default: Any = None,
    required: bool = False,
) -> Any:
    """`data[name]` checked against `kind`; a wrong type names the field."""
    if name not in data or data[name] is None:
        if required:
            raise BadRequest(f"missing field '{name}'")
        return default
    value = data[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise BadRequest(f"field '{name}' must be {_kind_name(kinds)}")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, kinds):
        raise BadRequest(f"field '{name}' must be {_kind_name(kinds)}")
    return value


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "an object",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def model_field(data: dict) -> str:
    """ollama clients send `model` (and older ones `name`)."""
    value = data.get("model") or data.get("name")
    if value is None:
        raise BadRequest("missing field 'model'")
    if not isinstance(value, str):
        raise BadRequest("field 'model' must be a string")
    return value
