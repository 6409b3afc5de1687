"""Host and Origin checks: DNS rebinding and cross-site requests from any web page are refused.

A server on loopback is reachable by every page the user opens: a page can POST to it
(a `text/plain` body needs no CORS preflight) or rebind its own DNS name to 127.0.0.1. As
ollama does:
- bound to loopback, only loopback names and addresses are accepted in `Host`;
- a request that carries an `Origin` is refused unless the origin is loopback, the server's
  own (same origin), a desktop-app scheme, or listed in LLMLB_ORIGINS. Requests without an
  Origin (the CLI, curl, SDK clients) are not from a browser and pass.
Allowed browser origins get CORS headers, so local web apps can use the API.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
from urllib.parse import urlsplit

from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    Scope,
    Send,
)

from llmlb.errors import error_body

APP_SCHEMES = ("app", "tauri", "vscode-webview", "vscode-file")
CORS_HEADERS = [
    (b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD"),
    (
        b"access-control-allow-headers",
        b"authorization, content-type, x-api-key, user-agent, accept, x-requested-with",
    ),
    (b"access-control-max-age", b"600"),
]


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, str]:
    """`host:port`, `[v6]:port` or `host` -> (host, port or "")."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest.removeprefix(":")
    host, sep, port = value.rpartition(":")
    return (host, port) if sep and port.isdigit() else (value, "")


def binds_loopback(bind_host: str) -> bool:
    return is_loopback_host(bind_host)


class OriginPolicy:
    def __init__(self, bind_host: str, extra_origins: list[str]):
        self.check_host = binds_loopback(bind_host)
        self.extra = [o.strip().lower().rstrip("/") for o in extra_origins if o.strip()]

    def host_allowed(self, host_header: str) -> bool:
        if not self.check_host or not host_header:
            return True
        return is_loopback_host(split_host(host_header)[0])

    def origin_allowed(self, origin: str, host_header: str) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if any(fnmatch.fnmatchcase(origin, pattern) for pattern in self.extra):
            return True
        parts = urlsplit(origin)
        if parts.scheme in APP_SCHEMES:
            return True
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False  # "null" (sandboxed frames, file:// pages) and anything odd
        if is_loopback_host(parts.hostname):
            return True
        return bool(host_header) and parts.netloc == host_header.strip().lower()  # same origin


class BrowserGuard:
    """ASGI middleware applying an OriginPolicy to every HTTP request."""

    def __init__(self, app: ASGIApp, policy: OriginPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k: v for k, v in scope["headers"] if k in (b"host", b"origin")}
        host = headers.get(b"host", b"").decode("latin-1")
        origin = headers.get(b"origin", b"").decode("latin-1")
        if not self.policy.host_allowed(host):
            await _refuse(
                send,
                scope,
                f"host '{host}' is not allowed: this server only answers on loopback names",
            )
            return
        if origin and not self.policy.origin_allowed(origin, host):
            await _refuse(
                send, scope, f"origin '{origin}' is not allowed (set LLMLB_ORIGINS to allow it)"
            )
            return
        if not origin:
            await self.app(scope, receive, send)
            return
        cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        if scope.get("method") == "OPTIONS" and any(
            k == b"access-control-request-method" for k, _ in scope["headers"]
        ):
            await _answer(send, 204, cors + CORS_HEADERS, b"")
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        await self.app(scope, receive, with_cors)


async def _refuse(send: Send, scope: Scope, message: str) -> None:
    data = json.dumps(error_body(scope.get("path", ""), 403, message, "permission_error")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await _answer(send, 403, headers, data)


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": headers,
    }
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(end)
