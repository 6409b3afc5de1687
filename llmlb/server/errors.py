"""One mapping from our errors (and Litestar's) to each API style's error body."""

from __future__ import annotations

import logging
import re

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.types import ExceptionHandlersMap

from llmlb.errors import LlmlbError, error_body

log = logging.getLogger("llmlb.server")

_KINDS = {
    "bool": "a boolean",
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "array": "a list",
    "object": "an object",
    "null": "null",
}
_EXPECTED = re.compile(r"^Expected `([^`]+)`, got `([^`]+)`$")
_BOUND = re.compile(r"^Expected `([^`]+)` (of length )?(>=|<=|>|<) ([0-9.e+-]+)$")
_WORDS = {">=": "at least", "<=": "at most", ">": "more than", "<": "less than"}


def _kinds(spec: str) -> str:
    kinds = [k.strip() for k in spec.split("|") if k.strip() != "null"]
    return " or ".join(_KINDS.get(k, k) for k in kinds)


def plain(message: str) -> str | None:
    """msgspec's "Expected `bool | str | null`, got `int`" in plain English; None if unknown."""
    if m := _EXPECTED.match(message):
        return f"must be {_kinds(m.group(1))}, not {_KINDS.get(m.group(2), m.group(2))}"
    if m := _BOUND.match(message):
        kind, length, op, bound = m.groups()
        if length:
            unit = ("character" if kind == "str" else "item") + ("" if bound == "1" else "s")
            return f"must have {_WORDS[op]} {bound} {unit}"
        return f"must be {_KINDS.get(kind, kind)} {_WORDS[op]} {bound}"
    return None


def error_response(
    request: Request,
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> Response:
    body = error_body(request.url.path, status, message, kind)
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=headers)


def _llmlb_error(request: Request, exc: LlmlbError) -> Response:
    if exc.status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc.message)
    headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
    return error_response(request, exc.status, exc.message, exc.kind, headers)


def _validation_error(request: Request, exc: ValidationException) -> Response:
    message = exc.detail or "invalid request"
    extra = exc.extra
    if isinstance(extra, list) and extra and isinstance(extra[0], dict):
        first = extra[0]
        key, text = str(first.get("key") or ""), str(first.get("message") or "")
        at = re.search(r" - at `\$\.?([^`]*)`$", text)
        if at:  # a nested field: msgspec names its path
            text, key = text[: at.start()], (f"{key}.{at.group(1)}" if key else at.group(1))
        if first.get("source") == "body" and key == "data" and text == "'data'":
            message = "request body is empty; send a JSON object"
        elif text.startswith("Object missing required field"):
            field = text.rsplit("`", 2)[-2] if text.count("`") >= 2 else key
            message = f"missing field '{field}'"
        elif key and key != "data":
            readable = plain(text)
            message = f"field '{key}' {readable}" if readable else f"field '{key}': {text}"
        elif text:  # the body as a whole
            readable = plain(text)
            message = (
                f"request body {readable}".replace("an object", "a JSON object")
                if readable
                else text
            )
    return error_response(request, 400, message)


def _http_error(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    message = exc.detail or "error"
    if status == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    elif status == 413:
        message = "request body is too large"
    kind = (
        "authentication_error"
        if isinstance(exc, NotAuthorizedException)
        else "invalid_request_error"
    )
    return error_response(request, status, message, kind, headers=exc.headers)


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(request, 500, f"internal error: {type(exc).__name__}", "server_error")


exception_handlers: ExceptionHandlersMap = {
    LlmlbError: _llmlb_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
