"""One mapping from our errors to each API style's error body."""

from __future__ import annotations

import logging

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from llmlb.errors import LlmlbError

log = logging.getLogger("llmlb.server")


def error_body(path: str, status: int, message: str, kind: str = "invalid_request_error") -> dict:
    """OpenAI's error object under /v1, ollama's plain {"error": message} elsewhere."""
    if path.startswith("/v1"):
        return {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return {"error": message}


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
    if isinstance(extra, list) and extra:
        first = extra[0]
        if isinstance(first, dict):
            key = first.get("key") or ""
            msg = first.get("message") or ""
            message = f"invalid field '{key}': {msg}" if key else (msg or message)
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
    return error_response(request, status, message, headers=exc.headers)


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(request, 500, f"internal error: {type(exc).__name__}", "server_error")


exception_handlers: ExceptionHandlersMap = {
    LlmlbError: _llmlb_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
