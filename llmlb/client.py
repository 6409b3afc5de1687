"""HTTP client for the node and router APIs; turns error bodies back into our errors."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

import httpx

from llmlb import settings
from llmlb.errors import CannotConnect, LlmlbError, from_status


def error_message(body: Any, fallback: str) -> str:
    """Both API styles: {"error": "..."} (ollama) and {"error": {"message": ...}} (OpenAI)."""
    if isinstance(body, dict):
        err = body.get("error", body.get("detail"))
        if isinstance(err, dict):
            err = err.get("message")
        if isinstance(err, str) and err:
            return err
    return fallback


class Client:
    def __init__(self, address: settings.Address, what: str = "llmlb server", timeout: float = 30.0):
        self.address = address
        self.what = what
        self._http = httpx.Client(base_url=address.url, timeout=httpx.Timeout(timeout, connect=5.0))

    @classmethod
    def node(cls) -> "Client":
        return cls(settings.node_address(), "llmlb server")

    @classmethod
    def router(cls) -> "Client":
        return cls(settings.router_address(), "llmlb router")

    def close(self) -> None:
        self._http.close()

    def _fail(self, response: httpx.Response) -> LlmlbError:
        try:
            body = json.loads(response.read() or b"null")
        except ValueError:
            body = None
        return from_status(response.status_code, error_message(body, f"HTTP {response.status_code}"))

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise CannotConnect(self.what, str(self.address)) from exc
        if response.status_code >= 400:
            raise self._fail(response)
        if not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def delete(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("DELETE", path, json=body, **kwargs)

    @contextmanager
    def stream(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Iterator[Iterator[dict]]:
        """NDJSON lines as dicts; an `{"error": ...}` line raises."""
        try:
            cm = self._http.stream(method, path, json=body, timeout=httpx.Timeout(timeout, connect=5.0))
            response = cm.__enter__()
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise CannotConnect(self.what, str(self.address)) from exc
        try:
            if response.status_code >= 400:
                raise self._fail(response)
            yield _ndjson(response)
        finally:
            cm.__exit__(None, None, None)


def _ndjson(response: httpx.Response) -> Iterator[dict]:
    for line in response.iter_lines():
        if not line.strip():
            continue
        item = json.loads(line)
        if isinstance(item, dict) and "error" in item:
            raise LlmlbError(error_message(item, "server error"))
        yield item
