"""One error hierarchy: a message, the HTTP status it maps to, and the CLI exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONNECT = 2


class LlmlbError(Exception):
    """A failure we can explain to the user in one line."""

    status = 500
    exit_code = EXIT_ERROR
    kind = "server_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(LlmlbError):
    status = 400
    kind = "invalid_request_error"


class ValidationError(BadRequest):
    """Input that breaks a data-model rule (a bad name, a size of 0...)."""


class Unauthorized(LlmlbError):
    status = 401
    kind = "authentication_error"


class Forbidden(LlmlbError):
    status = 403
    kind = "permission_error"


class NotFound(LlmlbError):
    status = 404
    kind = "not_found_error"


class ModelNotFound(NotFound):
    def __init__(self, name: str):
        super().__init__(f"model '{name}' not found")
        self.name = name


class Conflict(LlmlbError):
    status = 409
    kind = "conflict_error"


class TooLarge(LlmlbError):
    status = 413
    kind = "invalid_request_error"


class TooManyRequests(LlmlbError):
    status = 429
    kind = "rate_limit_error"


class Unavailable(LlmlbError):
    status = 503
    kind = "server_error"


class BadGateway(LlmlbError):
    """A server behind this one failed the request (the router's nodes)."""

    status = 502
    kind = "server_error"


class GatewayTimeout(LlmlbError):
    status = 504
    kind = "server_error"


class CannotConnect(LlmlbError):
    """The client could not reach a server: exit 2, never an HTTP answer."""

    exit_code = EXIT_CONNECT
    status = 503

    def __init__(self, what: str, address: str):
        super().__init__(f"could not connect to {what} at {address}; is it running?")
        self.address = address


_BY_STATUS = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    429: TooManyRequests,
    503: Unavailable,
}


def from_status(status: int, message: str) -> LlmlbError:
    """Rebuild an error from an HTTP answer (the client side of the mapping)."""
    cls = _BY_STATUS.get(status, LlmlbError)
    err = cls.__new__(cls)
    LlmlbError.__init__(err, message)
    if cls is LlmlbError:
        err.status = status
    return err


def error_body(path: str, status: int, message: str, kind: str = "invalid_request_error") -> dict:
    """The error object each API style expects: OpenAI's under /v1, ollama's plain
    {"error": message} elsewhere. Both servers answer through this one mapping."""
    if path.startswith("/v1"):
        return {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return {"error": message}
