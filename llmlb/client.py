"""HTTP client for the node and router APIs; turns error bodies back into our errors.

Built on the standard library's http.client rather than httpx: the CLI is short-lived and
importing httpx alone costs about 0.1 s, a third of the `list` latency budget.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


# What each kind of llmlb server answers on GET / (its liveness line), and the variable that
# names it for the commands that talk to it.
ROOT_LINES = {"llmlb is running": "node", "llmlb router is running": "router"}
ADDRESS_VARIABLE = {"node": "LLMLB_HOST", "router": "LLMLB_ROUTER"}
NO_ROUTE = "no such endpoint: "  # the servers' 404 for a path they do not serve at all
PROBE_SECS = 5.0


class Client:
    def __init__(
        self,
        address: settings.Address,
        what: str = "llmlb server",
        timeout: float = 30.0,
        kind: str | None = None,
    ):
        self.address = address
        self.what = what
        self.timeout = timeout
        self.kind = kind  # "node" or "router": the server the commands expect to talk to

    @classmethod
    def node(cls) -> Client:
        return cls(settings.node_address(), "llmlb server", kind="node")

    @classmethod
    def router(cls) -> Client:
        return cls(settings.router_address(), "llmlb router", kind="router")

    def _connect(self, timeout: float | None) -> http.client.HTTPConnection:
        host = self.address.host.strip("[]")
        cls = (
            http.client.HTTPSConnection
            if self.address.scheme == "https"
            else http.client.HTTPConnection
        )
        return cls(host, self.address.port, timeout=timeout)

    def _send(
        self, method: str, path: str, body: Any, timeout: float | None, headers: dict | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self._connect(timeout)
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            conn.connect()
        except OSError as exc:  # refused, unreachable, unknown host, connect timeout
            conn.close()
            raise CannotConnect(self.what, str(self.address)) from exc
        try:
            conn.request(method, path, body=data, headers=hdrs)
            return conn, conn.getresponse()
        except OSError as exc:
            conn.close()
            raise LlmlbError(f"connection to {self.what} at {self.address} failed: {exc}") from exc

    def _fail(self, response: http.client.HTTPResponse) -> LlmlbError:
        try:
            body = json.loads(response.read() or b"null")
        except ValueError:
            body = None
        message = error_message(body, f"HTTP {response.status}")
        if response.status == 404 and message.startswith(NO_ROUTE):
            return self._wrong_server() or from_status(404, message)
        return from_status(response.status, message)

    def _wrong_server(self) -> LlmlbError | None:
        """A path the server does not serve: when it is another kind of server than the
        command expects (LLMLB_ROUTER naming a node, LLMLB_HOST a router), say that."""
        if self.kind is None:
            return None
        try:
            conn, response = self._send("GET", "/", None, PROBE_SECS)
            try:
                line = response.read(200).decode(errors="replace").strip()
            finally:
                conn.close()
        except LlmlbError:
            return None
        found = ROOT_LINES.get(line)
        if response.status != 200 or found == self.kind:
            return None
        variable = ADDRESS_VARIABLE[self.kind]
        if found is None:
            if not line or len(line) > 60 or not line.isprintable():
                return None
            return LlmlbError(
                f"the server at {self.address} is not an llmlb {self.kind} (it says "
                f"'{line}'); point {variable} at one"
            )
        start = f"`llmlb {self.kind} serve`"
        return LlmlbError(
            f"the server at {self.address} is an llmlb {found}, not a {self.kind}: point "
            f"{variable} at a {self.kind} ({start}); {ADDRESS_VARIABLE[found]} is for the "
            f"`llmlb {found} ...` commands"
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float | None = None,
        headers: dict | None = None,
    ) -> Any:
        conn, response = self._send(method, path, body, timeout or self.timeout, headers)
        try:
            if response.status >= 400:
                raise self._fail(response)
            raw = response.read()
        finally:
            conn.close()
        if not raw:
            return None
        if (response.getheader("content-type") or "").startswith("application/json"):
            return json.loads(raw)
        return raw.decode(errors="replace")

    def exists(self, path: str) -> bool:
        """HEAD `path`: True on 2xx, False on 404; other answers raise."""
        conn, response = self._send("HEAD", path, None, self.timeout)
        try:
            response.read()
            if response.status == 404:
                return False
            if response.status >= 400:
                raise from_status(response.status, f"HTTP {response.status}")
            return True
        finally:
            conn.close()

    def upload(self, path: str, fh: Any, size: int) -> None:
        """POST a file's bytes (streamed from `fh`, `size` of them) to `path`."""
        conn = self._connect(None)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise CannotConnect(self.what, str(self.address)) from exc
        try:
            conn.putrequest("POST", path)
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(size))
            conn.endheaders()
            while chunk := fh.read(1 << 20):
                conn.send(chunk)
            response = conn.getresponse()
            if response.status >= 400:
                raise self._fail(response)
            response.read()
        except OSError as exc:
            raise LlmlbError(f"connection to {self.what} at {self.address} failed: {exc}") from exc
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, body, **kwargs)

    def delete(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("DELETE", path, body, **kwargs)

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float | None = None,
        headers: dict | None = None,
    ) -> Iterator[Iterator[dict]]:
        """NDJSON lines as dicts; an `{"error": ...}` line raises. timeout=None waits forever."""
        conn, response = self._send(method, path, body, timeout, headers)
        try:
            if response.status >= 400:
                raise self._fail(response)
            yield _ndjson(response)
        finally:
            conn.close()


def _ndjson(response: http.client.HTTPResponse) -> Iterator[dict]:
    while True:
        line = response.readline()
        if not line:
            return
        if not line.strip():
            continue
        item = json.loads(line)
        if isinstance(item, dict) and "error" in item:
            raise LlmlbError(error_message(item, "server error"))
        yield item
